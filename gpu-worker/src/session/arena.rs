//! Access to the shared bulk arena from the session executor.
//!
//! Exists so the executor can read host-to-device payloads named by arena
//! reference and write device-to-host results into the arena without
//! knowing which transport it runs on: the shm transport has an arena, tcp
//! and the in-memory simulator have none (a call naming the arena there is
//! `CUDA_ERROR_INVALID_VALUE`). Every offset and length comes from the
//! peer, so each access is bounds-checked by the transport and a bad one is
//! an error for that call, never a crash.
//!
//! Over rdma the "arena" is the client's registered pinned host region
//! (`docs/rdma.md`, "Pinned host memory"): a read is an RDMA READ into the
//! worker's staging, a write fills the staging and [`ArenaAccess::arena_commit`]
//! RDMA-WRITEs it back once the device copy succeeded.
//!
//! [`ArenaAccess::arena_span`] also tells a backend where the arena lives in
//! this process, so a GPU backend can page-lock it once
//! ([`Backend::register_host_arena`](crate::Backend::register_host_arena)):
//! the client's pinned host memory is carved out of this arena, and DMA then
//! reads and writes those pages directly.

use rgpu_dataplane::shm::ShmTransport;
use rgpu_dataplane::tcp::TcpUringTransport;
use rgpu_dataplane::Transport;
use rgpu_proto::CudaError;
use rgpu_ring::Slab;

/// Where a shared arena is mapped in this process. An address, not a
/// pointer: only a backend registering it with the driver uses it, and the
/// mapping outlives the session's backend calls (the transport owns it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostSpan {
    /// First byte's address.
    pub addr: usize,
    /// Length in bytes.
    pub len: usize,
}

/// Bounds-checked views into a shared arena.
pub trait ArenaAccess {
    /// The whole arena's address range, if there is one.
    fn arena_span(&self) -> Option<HostSpan> {
        None
    }
    /// The `len` bytes at `offset` (`&mut self`: over rdma this fetches them).
    ///
    /// # Errors
    /// [`CudaError::INVALID_VALUE`] when there is no arena or the range is
    /// outside it.
    fn arena_read(&mut self, offset: u64, len: u64) -> Result<&[u8], CudaError>;
    /// The `len` bytes at `offset`, writable. The bytes reach the peer once
    /// [`ArenaAccess::arena_commit`] returns.
    ///
    /// # Errors
    /// As [`ArenaAccess::arena_read`].
    fn arena_write(&mut self, offset: u64, len: u64) -> Result<&mut [u8], CudaError>;
    /// Publishes the bytes filled through [`ArenaAccess::arena_write`] for the
    /// same range. Shared memory needs nothing; rdma writes them to the peer.
    ///
    /// # Errors
    /// As [`ArenaAccess::arena_read`].
    fn arena_commit(&mut self, _offset: u64, _len: u64) -> Result<(), CudaError> {
        Ok(())
    }
}

/// No arena: every access fails (tcp, the simulator).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoArena;

impl ArenaAccess for NoArena {
    fn arena_read(&mut self, _offset: u64, _len: u64) -> Result<&[u8], CudaError> {
        Err(CudaError::INVALID_VALUE)
    }
    fn arena_write(&mut self, _offset: u64, _len: u64) -> Result<&mut [u8], CudaError> {
        Err(CudaError::INVALID_VALUE)
    }
}

impl ArenaAccess for ShmTransport {
    fn arena_span(&self) -> Option<HostSpan> {
        let len = self.arena().len();
        if len == 0 {
            return None;
        }
        let all = self.slab(Slab {
            offset: 0,
            len: len as u64,
        });
        all.ok().map(|bytes| HostSpan {
            addr: bytes.as_ptr() as usize,
            len,
        })
    }
    fn arena_read(&mut self, offset: u64, len: u64) -> Result<&[u8], CudaError> {
        self.slab(Slab { offset, len })
            .map_err(|_| CudaError::INVALID_VALUE)
    }
    fn arena_write(&mut self, offset: u64, len: u64) -> Result<&mut [u8], CudaError> {
        self.slab_mut(Slab { offset, len })
            .map_err(|_| CudaError::INVALID_VALUE)
    }
}

impl ArenaAccess for TcpUringTransport {
    fn arena_read(&mut self, _offset: u64, _len: u64) -> Result<&[u8], CudaError> {
        Err(CudaError::INVALID_VALUE)
    }
    fn arena_write(&mut self, _offset: u64, _len: u64) -> Result<&mut [u8], CudaError> {
        Err(CudaError::INVALID_VALUE)
    }
}

/// Over rdma: the client's registered pinned host region, reached with RDMA
/// READ and WRITE through the transport's staging. A range outside the region
/// is refused before anything is posted; a failed transfer closes the
/// transport (the session then ends at its next receive or send).
#[cfg(feature = "rdma")]
impl ArenaAccess for rgpu_dataplane::rdma::RdmaTransport {
    fn arena_read(&mut self, offset: u64, len: u64) -> Result<&[u8], CudaError> {
        self.read_peer_host(offset, len)
            .map_err(|e| rdma_arena_error("read", &e))
    }
    fn arena_write(&mut self, offset: u64, len: u64) -> Result<&mut [u8], CudaError> {
        self.peer_host_staging(offset, len)
            .map_err(|e| rdma_arena_error("write", &e))
    }
    fn arena_commit(&mut self, offset: u64, len: u64) -> Result<(), CudaError> {
        self.write_peer_host(offset, len)
            .map_err(|e| rdma_arena_error("commit", &e))
    }
}

/// A refused or failed host-region transfer is the call's `INVALID_VALUE`.
#[cfg(feature = "rdma")]
fn rdma_arena_error(op: &'static str, e: &rgpu_dataplane::TransportError) -> CudaError {
    tracing::debug!(op, %e, "rgpu session: rdma host-region access failed");
    CudaError::INVALID_VALUE
}

#[cfg(feature = "rdma")]
impl SessionTransport for rgpu_dataplane::rdma::RdmaTransport {
    fn has_arena(&self) -> bool {
        self.peer_host_len() > 0
    }
}

/// A transport a session can run over: bytes plus (maybe) an arena.
pub trait SessionTransport: Transport + ArenaAccess {
    /// Whether calls may name arena regions. When true, the driver stages
    /// received bytes so the arena is reachable while calls execute.
    fn has_arena(&self) -> bool;
}

impl SessionTransport for ShmTransport {
    fn has_arena(&self) -> bool {
        !self.arena().is_empty()
    }
}

impl SessionTransport for TcpUringTransport {
    fn has_arena(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_arena_has_no_span_and_refuses_access() {
        let mut a = NoArena;
        assert_eq!(a.arena_span(), None);
        assert_eq!(a.arena_read(0, 1), Err(CudaError::INVALID_VALUE));
        assert!(a.arena_write(0, 1).is_err());
    }
}
