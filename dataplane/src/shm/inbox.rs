//! Routing of popped ring records: data to the caller, controls to the
//! transport, leftovers into a bounded buffer.
//!
//! Exists so the record conventions of [`super::wire`] are applied in one
//! I/O-free place, shared by `recv`, `recv_exact_into` and the send path that
//! waits for slab releases.

use std::collections::VecDeque;

use rgpu_ring::{Arena, Slab};

use super::wire::Control;

/// Received stream bytes not yet handed out.
#[derive(Debug)]
pub(crate) enum Pending {
    /// Copied ring bytes `buf[off..]`.
    Bytes {
        /// The bytes.
        buf: Vec<u8>,
        /// Consumed prefix.
        off: usize,
    },
    /// Arena bytes `slab[off..used]` (no copy; the slab is released once consumed).
    Bulk {
        /// The slab.
        slab: Slab,
        /// Stream bytes in the slab.
        used: usize,
        /// Consumed prefix.
        off: usize,
    },
}

/// Where data bytes go while routing one pop.
pub(crate) enum Sink<'a> {
    /// Straight to the caller's callback.
    Deliver(&'a mut dyn FnMut(&[u8])),
    /// Into `dst[*at..]`, the rest buffered.
    Fill {
        /// Destination.
        dst: &'a mut [u8],
        /// Bytes filled so far.
        at: &'a mut usize,
    },
    /// Everything buffered (a send waiting for releases).
    Buffer,
}

/// Receive-side state of one shm transport.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    /// Bytes received but not handed out, in stream order.
    pub pending: VecDeque<Pending>,
    /// Sum of pending ring bytes (arena bytes are not copied and not counted).
    pub pending_bytes: usize,
    /// The previous record was the escape marker.
    pub escape: bool,
    /// The peer sent `Close`.
    pub closed: bool,
    /// Slabs this side consumed and must hand back (server: `Release` records;
    /// client: local frees).
    pub done_slabs: Vec<Slab>,
    /// Slabs the peer released (client side).
    pub released: Vec<Slab>,
    /// First protocol violation seen.
    pub violation: Option<String>,
    /// Data bytes routed by the current pop.
    pub routed: usize,
}

impl Inbox {
    /// Routes one popped record.
    pub(crate) fn route(&mut self, arena: &Arena, sink: &mut Sink<'_>, rec: &[u8]) {
        if std::mem::take(&mut self.escape) {
            match Control::decode(rec) {
                Ok(Control::Bulk { slab, used }) => self.on_bulk(arena, sink, slab, used),
                Ok(Control::Release { slab }) => self.released.push(slab),
                Ok(Control::Close) => self.closed = true,
                Err(e) => self.violate(e),
            }
            return;
        }
        if rec.is_empty() {
            self.escape = true;
            return;
        }
        self.routed += rec.len();
        let rest = Self::feed(sink, rec);
        if !rest.is_empty() {
            self.pending_bytes += rest.len();
            self.pending.push_back(Pending::Bytes {
                buf: rest.to_vec(),
                off: 0,
            });
        }
    }

    fn on_bulk(&mut self, arena: &Arena, sink: &mut Sink<'_>, slab: Slab, used: u64) {
        let Ok(bytes) = arena.slice(slab) else {
            return self.violate(format!("bulk slab {slab:?} outside the arena"));
        };
        let used = usize::try_from(used).unwrap_or(usize::MAX).min(bytes.len());
        self.routed += used;
        if !self.pending.is_empty() {
            // Stream order: queue behind what is already pending.
            self.pending.push_back(Pending::Bulk { slab, used, off: 0 });
            return;
        }
        let rest = Self::feed(sink, &bytes[..used]);
        if rest.is_empty() {
            self.done_slabs.push(slab);
        } else {
            self.pending.push_back(Pending::Bulk {
                slab,
                used,
                off: used - rest.len(),
            });
        }
    }

    /// Gives `bytes` to the sink; returns the part it did not take.
    fn feed<'b>(sink: &mut Sink<'_>, bytes: &'b [u8]) -> &'b [u8] {
        match sink {
            Sink::Deliver(f) => {
                f(bytes);
                &[]
            }
            Sink::Fill { dst, at } => {
                let n = (dst.len() - **at).min(bytes.len());
                dst[**at..**at + n].copy_from_slice(&bytes[..n]);
                **at += n;
                &bytes[n..]
            }
            Sink::Buffer => bytes,
        }
    }

    fn violate(&mut self, detail: String) {
        tracing::warn!(%detail, "shm peer violated the record conventions");
        self.violation.get_or_insert(detail);
    }

    /// Hands pending bytes to `sink` (not `Buffer`) until it is full or
    /// nothing is pending; returns bytes handed out.
    pub(crate) fn drain(&mut self, arena: &Arena, sink: &mut Sink<'_>) -> usize {
        let mut total = 0;
        while let Some(front) = self.pending.front_mut() {
            let (bytes, off): (&[u8], &mut usize) = match front {
                Pending::Bytes { buf, off } => (&buf[..], off),
                Pending::Bulk { slab, used, off } => match arena.slice(*slab) {
                    Ok(b) => (&b[..*used], off),
                    Err(_) => {
                        debug_assert!(false, "pending slab was validated when queued");
                        break;
                    }
                },
            };
            let rest = Self::feed(sink, &bytes[*off..]);
            let taken = bytes.len() - *off - rest.len();
            *off += taken;
            total += taken;
            let finished = rest.is_empty();
            if let Some(Pending::Bytes { .. }) = self.pending.front() {
                self.pending_bytes -= taken;
            }
            if !finished {
                break;
            }
            if let Some(Pending::Bulk { slab, .. }) = self.pending.pop_front() {
                self.done_slabs.push(slab);
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // `Arena` values come only from segments; a zero-arena segment is enough
    // for data-record routing.
    fn with_arena(f: impl FnOnce(&Arena)) {
        let cfg = rgpu_ring::SegmentConfig {
            ring_bytes: 4096,
            max_record_bytes: 512,
            arena_bytes: 8192,
        };
        let seg = rgpu_ring::Segment::create(&cfg).unwrap();
        f(seg.arena());
    }

    #[test]
    fn fill_takes_what_fits_and_buffers_the_rest() {
        with_arena(|arena| {
            let mut inbox = Inbox::default();
            let mut dst = [0u8; 3];
            let mut at = 0;
            let mut sink = Sink::Fill {
                dst: &mut dst,
                at: &mut at,
            };
            inbox.route(arena, &mut sink, b"abcde");
            assert_eq!(at, 3);
            assert_eq!(&dst, b"abc");
            assert_eq!(inbox.pending_bytes, 2);
            let mut got = Vec::new();
            let mut f = |b: &[u8]| got.extend_from_slice(b);
            assert_eq!(inbox.drain(arena, &mut Sink::Deliver(&mut f)), 2);
            assert_eq!(got, b"de");
            assert_eq!(inbox.pending_bytes, 0);
        });
    }

    #[test]
    fn escape_then_control_is_not_data() {
        with_arena(|arena| {
            let mut inbox = Inbox::default();
            inbox.route(arena, &mut Sink::Buffer, super::super::wire::ESCAPE);
            inbox.route(arena, &mut Sink::Buffer, &Control::Close.encode());
            assert!(inbox.closed);
            assert_eq!(inbox.routed, 0);
            inbox.route(arena, &mut Sink::Buffer, super::super::wire::ESCAPE);
            inbox.route(arena, &mut Sink::Buffer, b"garbage");
            assert!(inbox.violation.is_some());
        });
    }

    #[test]
    fn bulk_outside_arena_is_a_violation_and_inside_is_delivered() {
        with_arena(|arena| {
            let mut inbox = Inbox::default();
            let far = Control::Bulk {
                slab: Slab {
                    offset: 1 << 40,
                    len: 4096,
                },
                used: 10,
            };
            inbox.route(arena, &mut Sink::Buffer, &[]);
            inbox.route(arena, &mut Sink::Buffer, &far.encode());
            assert!(inbox.violation.is_some());

            let mut inbox = Inbox::default();
            let near = Control::Bulk {
                slab: Slab {
                    offset: 4096,
                    len: 4096,
                },
                used: 10,
            };
            let mut n = 0;
            let mut f = |b: &[u8]| n += b.len();
            inbox.route(arena, &mut Sink::Deliver(&mut f), &[]);
            inbox.route(arena, &mut Sink::Deliver(&mut f), &near.encode());
            assert_eq!(n, 10);
            assert_eq!(
                inbox.done_slabs,
                vec![Slab {
                    offset: 4096,
                    len: 4096
                }]
            );
        });
    }
}
