//! The real router on a loopback port, and a small HTTP/1.1 client that reads a
//! chunked reply chunk by chunk (to see what a streaming client sees, and when).

use std::net::SocketAddr;
use std::time::Duration;

use apiserver::AppState;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// How long a test waits for any single piece of a reply.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// `apiserver::router` served on 127.0.0.1; stopped when dropped.
pub struct Server {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Server {
    pub async fn start(state: AppState) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let app = apiserver::router(state);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Server { addr, task }
    }

    /// Sends `GET path` with extra header lines and reads the status and headers.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut conn = TcpStream::connect(self.addr).await.expect("connect");
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("\r\n");
        conn.write_all(request.as_bytes()).await.expect("send");
        let mut reader = BufReader::new(conn);
        let mut status_line = String::new();
        within(reader.read_line(&mut status_line)).await;
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            within(reader.read_line(&mut line)).await;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        Reply {
            status,
            headers,
            reader,
            done: false,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn within<T>(f: impl Future<Output = std::io::Result<T>>) -> T {
    tokio::time::timeout(PATIENCE, f)
        .await
        .expect("the server answers in time")
        .expect("the connection reads")
}

pub struct Reply {
    pub status: u16,
    headers: Vec<(String, String)>,
    reader: BufReader<TcpStream>,
    done: bool,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    }

    /// The next HTTP chunk, or None at the end of the body. Waits at most `wait`;
    /// Err(()) when nothing came in that time.
    pub async fn chunk_within(&mut self, wait: Duration) -> Result<Option<Vec<u8>>, ()> {
        if self.done {
            return Ok(None);
        }
        if !self.chunked() {
            // A whole body with Content-Length (error replies).
            let len: usize = self
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            tokio::time::timeout(wait, self.reader.read_exact(&mut body))
                .await
                .map_err(|_| ())?
                .expect("body reads");
            self.done = true;
            return Ok(Some(body));
        }
        let mut size_line = String::new();
        let n = tokio::time::timeout(wait, self.reader.read_line(&mut size_line))
            .await
            .map_err(|_| ())?
            .expect("chunk size reads");
        if n == 0 {
            self.done = true;
            return Ok(None);
        }
        let size = usize::from_str_radix(size_line.trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {size_line:?}"));
        let mut data = vec![0; size + 2];
        within(self.reader.read_exact(&mut data)).await;
        data.truncate(size);
        if size == 0 {
            self.done = true;
            return Ok(None);
        }
        Ok(Some(data))
    }

    /// The next chunk, or None at the end; fails after [`PATIENCE`].
    pub async fn chunk(&mut self) -> Option<Vec<u8>> {
        self.chunk_within(PATIENCE)
            .await
            .expect("a chunk or the end of the body in time")
    }

    /// The whole body as text.
    pub async fn text(mut self) -> String {
        let mut all = Vec::new();
        while let Some(c) = self.chunk().await {
            all.extend_from_slice(&c);
        }
        String::from_utf8(all).expect("utf-8 body")
    }
}
