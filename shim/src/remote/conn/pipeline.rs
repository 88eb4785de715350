//! Pipelined sync calls for the memory paths: submit several copies before waiting, send a
//! trailing payload right behind its frame, and reach the shm arena.
//!
//! Exists so that a large copy keeps the worker busy: while the worker executes chunk `k`,
//! the shim prepares chunk `k + 1` (stages it into the arena, or receives the previous
//! reply). [`Conn::sync_on`] waits for each reply before the next call; these methods split
//! that into [`Conn::submit_sync_on`] and [`Conn::collect_replies`]. A child module of `conn`
//! so it can drive the same client and transport without widening their visibility.

use std::io::IoSlice;
use std::time::{Duration, Instant};

use rgpu_dataplane::shm::ShmTransport;
use rgpu_proto::{Call, CallId, ClientEvent, Reply, StreamHandle};

use super::{submit_error, CallError, Conn, ConnError, Link, REPLY_TIMEOUT_MS};

impl Conn {
    /// The shm transport (its arena holds pinned host memory and staging slabs); `None` on
    /// other transports.
    pub fn shm_mut(&mut self) -> Option<&mut ShmTransport> {
        match &mut self.link {
            Link::Shm(t) => Some(t),
            Link::Tcp(_) => None,
            #[cfg(feature = "rdma")]
            Link::Rdma(_) => None,
        }
    }

    /// Whether this connection is a byte stream that carries trailers (tcp). Message-framed
    /// transports (rdma) refuse trailing payloads.
    pub fn has_trailers(&self) -> bool {
        matches!(self.link, Link::Tcp(_))
    }

    /// Whether this connection runs over shm (and so has an arena).
    pub fn is_shm(&self) -> bool {
        matches!(self.link, Link::Shm(_))
    }

    /// Whether calls may name pinned memory by arena offset: shm, or rdma with a registered
    /// host region (the worker reaches it with RDMA READ and WRITE).
    pub fn has_arena(&self) -> bool {
        match &self.link {
            Link::Shm(_) => true,
            #[cfg(feature = "rdma")]
            Link::Rdma(t) => t.host_region_len() > 0,
            Link::Tcp(_) => false,
        }
    }

    /// The rdma transport (its registered host region holds pinned host memory); `None` on
    /// other transports.
    #[cfg(feature = "rdma")]
    pub fn rdma_mut(&mut self) -> Option<&mut rgpu_dataplane::rdma::RdmaTransport> {
        match &mut self.link {
            Link::Rdma(t) => Some(t),
            _ => None,
        }
    }

    /// Submits the sync `call` ordered on `stream` and sends it without waiting for its
    /// reply; collect the reply with [`Conn::collect_replies`]. When the call carries a
    /// trailing payload, `trailer` holds exactly those bytes and is sent right behind the
    /// frame (one vectored send); otherwise `trailer` must be empty.
    pub fn submit_sync_on(
        &mut self,
        call: &Call<'_>,
        stream: StreamHandle,
        trailer: &[u8],
    ) -> Result<CallId, CallError> {
        let name = call.name();
        let expected = call.trailer_len();
        if expected != trailer.len() as u64 {
            return Err(ConnError::Submit {
                call: name,
                reason: format!(
                    "trailer of {} bytes given, {expected} announced",
                    trailer.len()
                ),
            }
            .into());
        }
        let now = self.now();
        let id = self
            .client
            .submit_call(now, call, stream)
            .map_err(|e| submit_error(name, e))?;
        self.pump_with_trailer(name, trailer)?;
        // The sync call sealed the open batch, and everything queued is now sent.
        self.mark.clear();
        Ok(id)
    }

    /// Like `pump`, but a batch that owes a trailer is followed by `trailer` in the same
    /// vectored send. Only the batch just sealed by [`Conn::submit_sync_on`] can owe one.
    fn pump_with_trailer(&mut self, call: &'static str, trailer: &[u8]) -> Result<(), ConnError> {
        let t = self.link.get();
        while let Some(batch) = self.client.peek_transmit() {
            let owed = self.client.peek_trailer();
            let parts = match owed {
                Some(o) if o.len == trailer.len() as u64 => {
                    [IoSlice::new(batch), IoSlice::new(trailer)]
                }
                Some(_) => {
                    return Err(ConnError::Submit {
                        call,
                        reason: "owed trailer does not match the bytes given".into(),
                    })
                }
                None => [IoSlice::new(batch), IoSlice::new(&[])],
            };
            let n = if owed.is_some() { 2 } else { 1 };
            t.send_vectored(&parts[..n])
                .map_err(|source| ConnError::Transport { call, source })?;
            self.client.advance_transmit();
            self.batches_sent += 1;
            if let Some(o) = owed {
                // Cannot fail: exactly the owed length was just sent.
                self.client
                    .trailer_sent(o.len)
                    .map_err(|e| ConnError::Submit {
                        call,
                        reason: e.to_string(),
                    })?;
            }
        }
        Ok(())
    }

    /// Waits (at most [`REPLY_TIMEOUT_MS`]) for input and hands every sync reply in it to
    /// `on` as `(id, reply or device error)`. A lost connection is an error here; the
    /// caller then knows none of its outstanding calls will be answered. A sticky error in
    /// a reply is mirrored for lock-free readers (`sticky_seen`), as `sync_on` does.
    pub fn collect_replies(
        &mut self,
        call: &'static str,
        on: &mut dyn FnMut(CallId, Result<&Reply<'_>, CallError>),
    ) -> Result<(), CallError> {
        if let Some(reason) = self.client.close_reason() {
            return Err(ConnError::Lost {
                call,
                reason: reason.to_string(),
            }
            .into());
        }
        let deadline = Instant::now() + Duration::from_millis(REPLY_TIMEOUT_MS);
        let mut lost: Option<String> = None;
        let result = self.recv_once(call, deadline, &mut |ev| match ev {
            ClientEvent::Reply { id, result } => match result {
                Ok(reply) => on(id, Ok(&reply)),
                Err(e) => on(id, Err(CallError::Cuda(e))),
            },
            ClientEvent::Aborted { error, .. } => {
                lost.get_or_insert_with(|| error.to_string());
            }
            _ => {}
        });
        // Mirror before reporting anything: a reply in this input may have poisoned the
        // context even when the receive then failed.
        self.mirror_sticky();
        result?;
        match lost {
            Some(reason) => Err(ConnError::Lost { call, reason }.into()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use rgpu_proto::{CtxSynchronize, CudaError};

    use super::super::{fake_server, sticky_seen, STICKY_SEEN, STICKY_TEST_LOCK};
    use super::*;

    #[test]
    fn pipelined_replies_feed_the_sticky_mirror() {
        let _serial = STICKY_TEST_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        STICKY_SEEN.store(0, Ordering::Relaxed);
        let launch_failed = CudaError(719);
        assert!(launch_failed.is_sticky());
        let server = fake_server::start(launch_failed);
        let mut conn = Conn::open(&server.config).expect("connect to the fake server");
        let call = Call::CtxSynchronize(CtxSynchronize {});
        let id = conn
            .submit_sync_on(&call, StreamHandle(0), &[])
            .expect("submitted");
        let mut answer = None;
        while answer.is_none() {
            conn.collect_replies("test", &mut |got, r| {
                if got == id {
                    answer = Some(matches!(r, Err(CallError::Cuda(e)) if e == launch_failed));
                }
            })
            .expect("collected");
        }
        assert_eq!(answer, Some(true));
        // Lock-free readers (local answers) now see the poisoned context.
        assert_eq!(sticky_seen(), Some(launch_failed));
        STICKY_SEEN.store(0, Ordering::Relaxed);
    }
}
