//! Capped reads of HTTP bodies from the network (reqwest and hyper alike). Anyone who
//! answers a webhook, a query or a download can send an endless body; every read of one
//! goes through [`read_capped`] with a limit chosen per use, and going past it is a
//! clear error instead of a process that eats its memory. Nothing here knows who asked.

use http_body_util::BodyExt;
use hyper::body::{Body, Buf, Bytes};

/// Largest webhook, alert-provider or registry error body kept (only its start is shown).
pub const SMALL_BODY: usize = 64 << 10;

/// Why a capped read failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CapError {
    /// The body is (or announced it would be) longer than the limit.
    #[error("{what}: response body larger than {}", human(*limit))]
    TooLarge {
        /// What was being read, e.g. `GET https://charts.example/index.yaml`.
        what: String,
        /// The limit in bytes.
        limit: usize,
    },
    /// The connection failed or timed out while the body was read.
    #[error("{what}: reading the response body: {message}")]
    Read {
        /// What was being read.
        what: String,
        /// The transport error with its causes.
        message: String,
    },
}

/// `65536` as `64 KiB`, `10485760` as `10 MiB`.
pub fn human(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// Reads all of `body`, failing as soon as it passes `limit` bytes: at once when its
/// Content-Length says so, otherwise after the first frame that crosses the limit.
pub async fn read_capped<B>(body: B, limit: usize, what: &str) -> Result<Bytes, CapError>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let too_large = || CapError::TooLarge {
        what: what.to_string(),
        limit,
    };
    let announced = body.size_hint().lower();
    if announced > limit as u64 {
        return Err(too_large());
    }
    let mut body = std::pin::pin!(body);
    let mut out = Vec::with_capacity(announced as usize);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| CapError::Read {
            what: what.to_string(),
            message: super::error_chain(e.into().as_ref()),
        })?;
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        if out.len() + data.remaining() > limit {
            return Err(too_large());
        }
        while data.has_remaining() {
            let chunk = data.chunk();
            out.extend_from_slice(chunk);
            let n = chunk.len();
            data.advance(n);
        }
    }
    Ok(Bytes::from(out))
}

/// [`read_capped`] for a reqwest response (its status and headers already looked at).
pub async fn read_response(
    resp: reqwest::Response,
    limit: usize,
    what: &str,
) -> Result<Bytes, CapError> {
    read_capped(reqwest::Body::from(resp), limit, what).await
}

/// Reads and throws away `body`, so the connection can be reused, in constant memory.
pub async fn drain<B: Body>(body: B) {
    let mut body = std::pin::pin!(body);
    while let Some(Ok(_)) = body.frame().await {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;
    use hyper::body::Frame;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// `n` data frames of `size` bytes, with no announced length (as chunked encoding).
    struct Chunks {
        n: usize,
        size: usize,
    }

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            if self.n == 0 {
                return Poll::Ready(None);
            }
            self.n -= 1;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; self.size])))))
        }
    }

    fn chunks(n: usize, size: usize) -> Chunks {
        Chunks { n, size }
    }

    #[tokio::test]
    async fn reads_up_to_the_limit_and_no_further() {
        let ok = read_capped(chunks(4, 1024), 4096, "test").await.unwrap();
        assert_eq!(ok.len(), 4096);
        let err = read_capped(chunks(5, 1024), 4096, "GET http://x/y")
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "GET http://x/y: response body larger than 4 KiB"
        );
    }

    #[tokio::test]
    async fn announced_length_fails_before_reading() {
        let err = read_capped(Full::new(Bytes::from(vec![0u8; 100])), 99, "blob")
            .await
            .unwrap_err();
        assert!(matches!(err, CapError::TooLarge { limit: 99, .. }), "{err}");
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human(10 << 20), "10 MiB");
        assert_eq!(human(64 << 10), "64 KiB");
        assert_eq!(human(1000), "1000 bytes");
    }
}
