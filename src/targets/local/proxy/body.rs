//! Request bodies as the proxy forwards them: streamed from the client to the backend,
//! never held whole. Only a body that may have to be sent twice (to a mirror, or again
//! on a retry) is buffered, and only up to [`REPLAY_LIMIT`]; a longer one is streamed and
//! neither mirrored nor retried, as Envoy does past its buffer limit. Response bodies
//! stream back the same way.

use super::upstream::UpstreamBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Largest request body kept for a mirror or a retry: Envoy's default per-connection
/// buffer limit (1 MiB).
pub const REPLAY_LIMIT: usize = 1 << 20;

/// A request body on its way to a backend.
pub enum ProxyBody {
    /// Wholly in memory: can be sent again.
    Buffered(Full<Bytes>),
    /// Passed through from the client as it arrives, after the part already read.
    Streaming {
        /// Bytes read while trying to buffer, sent first.
        head: Option<Bytes>,
        /// The rest, still with the client.
        rest: Incoming,
    },
}

impl ProxyBody {
    /// Takes the client's body; with `replayable`, reads it into memory unless it is
    /// longer than [`REPLAY_LIMIT`] (then it streams on from where reading stopped).
    pub async fn from_client(mut body: Incoming, replayable: bool) -> Result<Self, hyper::Error> {
        if body.is_end_stream() {
            return Ok(ProxyBody::Buffered(Full::new(Bytes::new())));
        }
        if !replayable || body.size_hint().lower() > REPLAY_LIMIT as u64 {
            return Ok(ProxyBody::Streaming {
                head: None,
                rest: body,
            });
        }
        let mut buf = Vec::new();
        while let Some(frame) = body.frame().await {
            // Trailers are dropped, as before streaming: HTTP/1.1 backends rarely see any.
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            if buf.len() > REPLAY_LIMIT {
                return Ok(ProxyBody::Streaming {
                    head: Some(Bytes::from(buf)),
                    rest: body,
                });
            }
        }
        Ok(ProxyBody::Buffered(Full::new(Bytes::from(buf))))
    }

    /// A copy to send again, if the body is buffered.
    pub fn replay(&self) -> Option<ProxyBody> {
        match self {
            ProxyBody::Buffered(full) => Some(ProxyBody::Buffered(full.clone())),
            ProxyBody::Streaming { .. } => None,
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Buffered(full) => Pin::new(full)
                .poll_frame(cx)
                .map_err(|never| match never {}),
            ProxyBody::Streaming { head, rest } => match head.take() {
                Some(h) => Poll::Ready(Some(Ok(Frame::data(h)))),
                None => Pin::new(rest).poll_frame(cx),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Buffered(full) => full.is_end_stream(),
            ProxyBody::Streaming { head, rest } => head.is_none() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Buffered(full) => full.size_hint(),
            ProxyBody::Streaming { head, rest } => {
                let extra = head.as_ref().map_or(0, |h| h.len() as u64);
                let inner = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower() + extra);
                if let Some(u) = inner.upper() {
                    hint.set_upper(u + extra);
                }
                hint
            }
        }
    }
}

/// A response body on its way to the client: a replica's, or the proxy's own text
/// (an enum rather than a boxed body: no allocation per response).
pub enum ResponseBody {
    /// From a replica.
    Upstream(UpstreamBody),
    /// Written by the proxy (502, 503, 400).
    Text(Full<Bytes>),
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ResponseBody::Upstream(b) => Pin::new(b).poll_frame(cx),
            ResponseBody::Text(t) => Pin::new(t).poll_frame(cx).map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream(b) => b.is_end_stream(),
            ResponseBody::Text(t) => t.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream(b) => b.size_hint(),
            ResponseBody::Text(t) => t.size_hint(),
        }
    }
}
