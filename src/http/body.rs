//! Reading request bodies without holding more than the daemon config allows.
//!
//! Only the webhooks keep a body ([`HookBuffer::read`]): the bytes they hold before their
//! signature is checked come from one budget shared by every connection (`http.hook_buffer`).
//! A body declared with a `Content-Length` takes its whole share before a byte of it is read,
//! so a hook that does not fit is refused at once; a chunked body takes its share chunk by
//! chunk. Every other body is read to its end and dropped as it comes ([`drain`]): no other
//! endpoint reads one, and the limits still apply to it. Every read ends within
//! `http.body_timeout`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a body was not read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is larger than the endpoint takes.
    #[error("the request body is over {0} bytes")]
    TooLarge(usize),
    /// The bytes held by bodies not yet verified are at `http.hook_buffer`.
    #[error("too many webhook bodies are being read at once (http.hook_buffer); try again later")]
    Busy,
    /// The body did not arrive whole within `http.body_timeout`.
    #[error("the request body did not arrive within {0:?} (http.body_timeout)")]
    TimedOut(Duration),
    /// The connection failed while the body was read.
    #[error("the request body could not be read: {0}")]
    Broken(String),
}

/// The size a request declares in its `Content-Length`, if any.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// Reads `body` to its end, keeping none of it: at most `max` bytes, within `within`.
pub async fn drain(
    headers: &HeaderMap,
    mut body: Body,
    max: usize,
    within: Duration,
) -> Result<(), BodyError> {
    if declared_length(headers).is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooLarge(max));
    }
    let read = async {
        let mut total = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| BodyError::Broken(e.to_string()))?;
            if let Some(data) = frame.data_ref() {
                total += data.len();
                if total > max {
                    return Err(BodyError::TooLarge(max));
                }
            }
        }
        Ok(())
    };
    tokio::time::timeout(within, read)
        .await
        .unwrap_or(Err(BodyError::TimedOut(within)))
}

/// The budget of bytes that webhook bodies may hold before their signature is checked, shared
/// by every connection.
#[derive(Debug, Clone)]
pub struct HookBuffer {
    bytes: Arc<Semaphore>,
}

/// A body read whole, with the share of the [`HookBuffer`] it holds until dropped.
#[derive(Debug)]
pub struct HeldBody {
    /// The body's bytes.
    pub bytes: Vec<u8>,
    _share: Option<OwnedSemaphorePermit>,
}

impl HookBuffer {
    /// A budget of `bytes` (capped at what a semaphore counts).
    pub fn new(bytes: u64) -> HookBuffer {
        let n = usize::try_from(bytes)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        HookBuffer {
            bytes: Arc::new(Semaphore::new(n)),
        }
    }

    /// Bytes of the budget free now.
    pub fn free(&self) -> usize {
        self.bytes.available_permits()
    }

    /// Takes `n` bytes of the budget, or none when they are not free.
    fn take(&self, n: usize) -> Result<Option<OwnedSemaphorePermit>, BodyError> {
        if n == 0 {
            return Ok(None);
        }
        let n = u32::try_from(n).map_err(|_| BodyError::Busy)?;
        match self.bytes.clone().try_acquire_many_owned(n) {
            Ok(p) => Ok(Some(p)),
            Err(_) => Err(BodyError::Busy),
        }
    }

    /// Reads `body` (of a request with `headers`) whole: at most `max` bytes, within `within`,
    /// each chunk handed to `each` as it arrives (a signature computed while reading). Refused
    /// before any byte is read when its declared length is over `max` or not free in the
    /// budget.
    pub async fn read(
        &self,
        headers: &HeaderMap,
        mut body: Body,
        max: usize,
        within: Duration,
        mut each: impl FnMut(&[u8]),
    ) -> Result<HeldBody, BodyError> {
        let declared = declared_length(headers);
        if declared.is_some_and(|n| n > max as u64) {
            return Err(BodyError::TooLarge(max));
        }
        let declared = declared.map(|n| n as usize);
        let mut share = self.take(declared.unwrap_or(0))?;
        let read = async {
            let mut bytes = Vec::with_capacity(declared.unwrap_or(0));
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| BodyError::Broken(e.to_string()))?;
                let Some(data) = frame.data_ref() else {
                    continue;
                };
                if bytes.len() + data.len() > max {
                    return Err(BodyError::TooLarge(max));
                }
                // A declared length was taken whole (hyper holds the body to it); a chunked
                // body takes its share as it comes.
                if declared.is_none()
                    && let Some(more) = self.take(data.len())?
                {
                    match share.as_mut() {
                        Some(s) => s.merge(more),
                        None => share = Some(more),
                    }
                }
                each(data);
                bytes.extend_from_slice(data);
            }
            Ok(bytes)
        };
        let bytes = tokio::time::timeout(within, read)
            .await
            .unwrap_or(Err(BodyError::TimedOut(within)))?;
        Ok(HeldBody {
            bytes,
            _share: share,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn length(n: usize) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, n.to_string().parse().unwrap());
        h
    }

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_declared_body_takes_its_share_before_it_is_read_and_gives_it_back() {
        let buf = HookBuffer::new(100);
        let held = buf
            .read(&length(60), Body::from(vec![b'a'; 60]), 1000, T, |_| {})
            .await
            .unwrap();
        assert_eq!(held.bytes.len(), 60);
        assert_eq!(buf.free(), 40);
        // Another 60 do not fit while the first is held: refused unread.
        let e = buf
            .read(&length(60), Body::from(vec![b'b'; 60]), 1000, T, |_| {})
            .await
            .unwrap_err();
        assert!(matches!(e, BodyError::Busy), "{e}");
        drop(held);
        assert_eq!(buf.free(), 100);
    }

    #[tokio::test]
    async fn a_chunked_body_takes_its_share_as_it_comes() {
        let buf = HookBuffer::new(100);
        let mut seen = 0;
        let held = buf
            .read(
                &HeaderMap::new(),
                Body::from(vec![b'a'; 70]),
                1000,
                T,
                |c| seen += c.len(),
            )
            .await
            .unwrap();
        assert_eq!((held.bytes.len(), seen, buf.free()), (70, 70, 30));
        let e = buf
            .read(
                &HeaderMap::new(),
                Body::from(vec![b'a'; 31]),
                1000,
                T,
                |_| {},
            )
            .await
            .unwrap_err();
        assert!(matches!(e, BodyError::Busy), "{e}");
        assert_eq!(buf.free(), 30, "a refused body gives back what it took");
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused() {
        let buf = HookBuffer::new(1000);
        let e = buf
            .read(&length(11), Body::from(vec![b'a'; 11]), 10, T, |_| {})
            .await
            .unwrap_err();
        assert!(matches!(e, BodyError::TooLarge(10)), "{e}");
        let e = buf
            .read(&HeaderMap::new(), Body::from(vec![b'a'; 11]), 10, T, |_| {})
            .await
            .unwrap_err();
        assert!(matches!(e, BodyError::TooLarge(10)), "{e}");
        assert_eq!(buf.free(), 1000);
        assert!(
            drain(&HeaderMap::new(), Body::from(vec![b'a'; 10]), 10, T)
                .await
                .is_ok()
        );
        assert!(matches!(
            drain(&HeaderMap::new(), Body::from(vec![b'a'; 11]), 10, T).await,
            Err(BodyError::TooLarge(10))
        ));
    }
}
