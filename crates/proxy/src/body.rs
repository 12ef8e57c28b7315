//! The request body sent upstream: the downstream body, counted for `%BYTES_RECEIVED%`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// A downstream request body on its way upstream.
#[derive(Debug)]
pub struct ReqBody {
    inner: Option<Incoming>,
    /// Body bytes seen so far; absent when the request has no body.
    counter: Option<Arc<AtomicU64>>,
}

impl ReqBody {
    pub fn new(inner: Incoming, counter: Option<Arc<AtomicU64>>) -> Self {
        Self {
            inner: Some(inner),
            counter,
        }
    }

    pub fn empty() -> Self {
        Self {
            inner: None,
            counter: None,
        }
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(counter)) = (&polled, &this.counter)
            && let Some(data) = frame.data_ref()
        {
            counter.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(b) => b.size_hint(),
            None => SizeHint::with_exact(0),
        }
    }
}
