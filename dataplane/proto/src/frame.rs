//! Frame assembly: writing frames into an output buffer and cutting an
//! input byte sequence (any chunking) into whole frames.
//!
//! [`FrameDecoder`] hands frames that lie wholly inside the caller's chunk
//! straight to the visitor, borrowing the caller's bytes (the common case on
//! message transports and for small frames on TCP). Only a frame split
//! across chunks is copied, into one reusable buffer whose growth is bounded
//! by a header that already passed validation (at most [`MAX_FRAME_BYTES`]).

use crate::error::{ConnError, HeaderError};
use crate::header::{Header, HEADER_BYTES, MAX_BODY_BYTES, MAX_FRAME_BYTES};

/// How the transport delivers bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// Arbitrary chunks of a byte stream (TCP): frames may be split across
    /// chunks and chunks may hold many frames.
    #[default]
    Stream,
    /// Whole batches (shm ring slots, RDMA messages): each chunk must end on
    /// a frame boundary, a partial frame at the end is an error.
    Message,
}

/// What the decoder does after handing out a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep cutting frames from the input.
    Continue,
    /// Stop: the bytes after this frame are its trailer, not frames.
    Pause,
}

/// One decoded frame: validated header and its body.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// The validated header.
    pub header: Header,
    /// Exactly `header.body_len` bytes.
    pub body: &'a [u8],
}

/// Appends one frame to `out`: a header for `kind`/`flags`/`seq`/`key`,
/// then whatever `body` appends. Returns the body length.
///
/// The header is written after the body (into space reserved before it), so
/// the body is encoded exactly once, straight into `out`. If the body would
/// exceed [`MAX_BODY_BYTES`], `out` is restored and `Err(len)` returned.
///
/// # Errors
/// `Err(body_len)` when the body exceeds [`MAX_BODY_BYTES`].
#[inline]
pub fn write_frame(
    out: &mut Vec<u8>,
    kind: u16,
    flags: u8,
    seq: u64,
    key: u64,
    body: impl FnOnce(&mut Vec<u8>),
) -> Result<u32, usize> {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_BYTES]);
    body(out);
    let body_len = out.len() - start - HEADER_BYTES;
    let Ok(len32) = u32::try_from(body_len) else {
        out.truncate(start);
        return Err(body_len);
    };
    if len32 > MAX_BODY_BYTES {
        out.truncate(start);
        return Err(body_len);
    }
    let header = Header {
        kind,
        flags,
        seq,
        key,
        body_len: len32,
    };
    let slot: &mut [u8; HEADER_BYTES] = (&mut out[start..start + HEADER_BYTES])
        .try_into()
        .unwrap_or_else(|_| unreachable!("slice has HEADER_BYTES length by construction"));
    header.write(slot);
    Ok(len32)
}

/// Reassembles frames from transport chunks.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    framing: Framing,
    /// Bytes of a frame split across chunks (empty between frames).
    partial: Vec<u8>,
    /// Total length of the partial frame once its header is known.
    partial_need: Option<usize>,
}

impl FrameDecoder {
    /// A decoder for the given framing.
    #[must_use]
    pub fn new(framing: Framing) -> Self {
        Self {
            framing,
            partial: Vec::new(),
            partial_need: None,
        }
    }

    /// Bytes of an incomplete frame held back from earlier chunks.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }

    /// Feeds one chunk, calling `on_frame` for each complete frame in order.
    /// Stops at the first error (header invalid, or the visitor's error).
    ///
    /// # Errors
    /// The first [`ConnError`] from header validation, framing, or
    /// `on_frame`.
    pub fn feed<F>(&mut self, input: &[u8], mut on_frame: F) -> Result<(), ConnError>
    where
        F: FnMut(Frame<'_>) -> Result<(), ConnError>,
    {
        let used = self.feed_until(input, |f| on_frame(f).map(|()| Flow::Continue))?;
        debug_assert_eq!(used, input.len(), "never paused");
        Ok(())
    }

    /// Like [`FrameDecoder::feed`], but `on_frame` may return
    /// [`Flow::Pause`] to stop right after that frame (its trailer follows
    /// on the stream). Returns how many bytes of `input` were consumed: all
    /// of them unless paused, in which case the rest is not frame data and
    /// the caller handles it before feeding the decoder again.
    ///
    /// # Errors
    /// As [`FrameDecoder::feed`].
    pub fn feed_until<F>(&mut self, input: &[u8], mut on_frame: F) -> Result<usize, ConnError>
    where
        F: FnMut(Frame<'_>) -> Result<Flow, ConnError>,
    {
        let mut rest = input;
        if !self.partial.is_empty() {
            rest = self.fill_partial(rest)?;
            let Some(need) = self.partial_need else {
                self.check_end(rest)?;
                return Ok(input.len());
            };
            if self.partial.len() < need {
                debug_assert!(rest.is_empty());
                self.check_end(rest)?;
                return Ok(input.len());
            }
            let header = Header::parse(&self.partial)?;
            let frame = Frame {
                header,
                body: &self.partial[HEADER_BYTES..need],
            };
            let res = on_frame(frame);
            self.partial.clear();
            self.partial_need = None;
            if res? == Flow::Pause {
                return Ok(input.len() - rest.len());
            }
        }
        while rest.len() >= HEADER_BYTES {
            let header = Header::parse(rest)?;
            let total = HEADER_BYTES + header.body_len as usize;
            if rest.len() < total {
                break;
            }
            let (frame_bytes, tail) = rest.split_at(total);
            let flow = on_frame(Frame {
                header,
                body: &frame_bytes[HEADER_BYTES..],
            })?;
            rest = tail;
            if flow == Flow::Pause {
                return Ok(input.len() - rest.len());
            }
        }
        if !rest.is_empty() {
            self.partial.extend_from_slice(rest);
            if self.partial.len() >= HEADER_BYTES {
                let h = Header::parse(&self.partial)?;
                let need = HEADER_BYTES + h.body_len as usize;
                self.partial
                    .reserve(need.saturating_sub(self.partial.len()));
                self.partial_need = Some(need);
            }
        }
        self.check_end(&[])?;
        Ok(input.len())
    }

    /// Copies from `input` into the partial frame until its header, then its
    /// whole body, is present; returns the unused rest of `input`.
    fn fill_partial<'i>(&mut self, mut input: &'i [u8]) -> Result<&'i [u8], HeaderError> {
        if self.partial.len() < HEADER_BYTES {
            let want = (HEADER_BYTES - self.partial.len()).min(input.len());
            self.partial.extend_from_slice(&input[..want]);
            input = &input[want..];
            if self.partial.len() < HEADER_BYTES {
                return Ok(input);
            }
            // Validate before reserving: the body bound caps the allocation.
            let h = Header::parse(&self.partial)?;
            let need = HEADER_BYTES + h.body_len as usize;
            debug_assert!(need <= MAX_FRAME_BYTES);
            self.partial.reserve(need - self.partial.len());
            self.partial_need = Some(need);
        }
        let need = self.partial_need.unwrap_or(HEADER_BYTES);
        let want = need.saturating_sub(self.partial.len()).min(input.len());
        self.partial.extend_from_slice(&input[..want]);
        Ok(&input[want..])
    }

    fn check_end(&self, rest: &[u8]) -> Result<(), ConnError> {
        debug_assert!(rest.is_empty() || self.partial.is_empty());
        if self.framing == Framing::Message && !self.partial.is_empty() {
            return Err(ConnError::TruncatedBatch {
                leftover: self.partial.len(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n {
            write_frame(&mut out, 0x0102, 0, i as u64, 0, |b| {
                b.extend_from_slice(&vec![i as u8; i % 7]);
            })
            .unwrap();
        }
        out
    }

    #[test]
    fn every_split_point_yields_same_frames() {
        let bytes = frames(5);
        for cut in 0..=bytes.len() {
            let mut d = FrameDecoder::new(Framing::Stream);
            let mut seqs = Vec::new();
            let mut visit = |f: Frame<'_>| {
                assert_eq!(f.body.len(), (f.header.seq % 7) as usize);
                seqs.push(f.header.seq);
                Ok(())
            };
            d.feed(&bytes[..cut], &mut visit).unwrap();
            d.feed(&bytes[cut..], &mut visit).unwrap();
            assert_eq!(seqs, vec![0, 1, 2, 3, 4], "cut at {cut}");
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn pause_stops_right_after_the_frame_at_every_split_point() {
        let bytes = frames(3);
        let first_end = HEADER_BYTES; // frame 0 has an empty body
        for cut in 0..=bytes.len() {
            let mut d = FrameDecoder::new(Framing::Stream);
            let seen = core::cell::Cell::new(0);
            let visit = |f: Frame<'_>| {
                seen.set(seen.get() + 1);
                Ok(if f.header.seq == 0 {
                    Flow::Pause
                } else {
                    Flow::Continue
                })
            };
            let a = d.feed_until(&bytes[..cut], visit).unwrap();
            // Paused in the first chunk, or fed the second one.
            let consumed = if seen.get() == 1 {
                a
            } else {
                assert_eq!(a, cut);
                a + d.feed_until(&bytes[cut..], visit).unwrap()
            };
            assert_eq!(consumed, first_end, "cut at {cut}");
            assert_eq!(seen.get(), 1, "cut at {cut}");
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn message_framing_rejects_partial_batch() {
        let bytes = frames(2);
        let mut d = FrameDecoder::new(Framing::Message);
        let err = d.feed(&bytes[..bytes.len() - 1], |_| Ok(())).unwrap_err();
        assert!(matches!(err, ConnError::TruncatedBatch { .. }));
    }

    #[test]
    fn oversized_body_rejected_before_buffering() {
        let mut b = frames(1);
        b[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut d = FrameDecoder::new(Framing::Stream);
        let err = d
            .feed(&b[..20], |_| Ok(()))
            .and_then(|()| d.feed(&b[20..], |_| Ok(())));
        assert!(matches!(
            err,
            Err(ConnError::Header(HeaderError::BodyTooLarge { .. }))
        ));
    }
}
