//! Just enough HTTP/1.1 response framing to know where a response ends on a keep-alive
//! connection: Content-Length, chunked, or read-to-close.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("malformed status line")]
    StatusLine,
    #[error("malformed header line")]
    Header,
    #[error("invalid Content-Length")]
    ContentLength,
    #[error("invalid chunk size")]
    ChunkSize,
}

/// A complete response at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Bytes the response occupies (head + body).
    pub len: usize,
    /// The server will close the connection after it.
    pub close: bool,
}

/// Parses the response at the start of `buf`; `Ok(None)` means more bytes are needed.
/// Responses without a length are not supported (the servers measured always send one).
pub fn parse(buf: &[u8]) -> Result<Option<Response>, ParseError> {
    let Some(head_end) = find(buf, b"\r\n\r\n").map(|i| i + 4) else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| ParseError::Header)?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or(ParseError::StatusLine)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().ok_or(ParseError::StatusLine)?;
    if !version.starts_with("HTTP/1.") {
        return Err(ParseError::StatusLine);
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or(ParseError::StatusLine)?;
    let mut content_length = None;
    let mut chunked = false;
    let mut close = version == "HTTP/1.0";
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or(ParseError::Header)?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| ParseError::ContentLength)?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().ends_with("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    // 1xx, 204 and 304 have no body.
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(Some(Response {
            status,
            len: head_end,
            close,
        }));
    }
    if chunked {
        return Ok(chunked_end(buf, head_end)?.map(|len| Response { status, len, close }));
    }
    let body = content_length.unwrap_or(0);
    Ok((buf.len() >= head_end + body).then_some(Response {
        status,
        len: head_end + body,
        close,
    }))
}

/// The end of a chunked body that starts at `at`, if all of it is in `buf`.
fn chunked_end(buf: &[u8], mut at: usize) -> Result<Option<usize>, ParseError> {
    loop {
        let Some(line_end) = find(&buf[at..], b"\r\n").map(|i| at + i) else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&buf[at..line_end]).map_err(|_| ParseError::ChunkSize)?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| ParseError::ChunkSize)?;
        at = line_end + 2;
        if size == 0 {
            // Trailers end with an empty line.
            return Ok(trailers_end(buf, at));
        }
        if buf.len() < at + size + 2 {
            return Ok(None);
        }
        at += size + 2;
    }
}

fn trailers_end(buf: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let end = find(&buf[at..], b"\r\n")? + at;
        if end == at {
            return Some(at + 2);
        }
        at = end + 2;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_responses_end_after_the_body() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(parse(&r[..r.len() - 1]), Ok(None));
        assert_eq!(
            parse(r),
            Ok(Some(Response {
                status: 200,
                len: r.len(),
                close: false
            }))
        );
    }

    #[test]
    fn chunked_responses_end_after_the_last_chunk_and_trailers() {
        let r = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        assert_eq!(parse(&r[..r.len() - 2]), Ok(None));
        assert_eq!(parse(r).unwrap().unwrap().len, r.len());
        let t = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nx-a: 1\r\n\r\n";
        assert_eq!(parse(t).unwrap().unwrap().len, t.len());
    }

    #[test]
    fn connection_close_and_bodiless_statuses() {
        let r = b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";
        assert_eq!(
            parse(r),
            Ok(Some(Response {
                status: 204,
                len: r.len(),
                close: true
            }))
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert_eq!(parse(b"SSH-2.0\r\n\r\n"), Err(ParseError::StatusLine));
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"),
            Err(ParseError::ContentLength)
        );
    }
}
