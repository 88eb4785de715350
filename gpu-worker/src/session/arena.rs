//! Access to the shared bulk arena from the session executor.
//!
//! Exists so the executor can read host-to-device payloads named by arena
//! reference and write device-to-host results into the arena without
//! knowing which transport it runs on: the shm transport has an arena, tcp
//! and the in-memory simulator have none (a call naming the arena there is
//! `CUDA_ERROR_INVALID_VALUE`). Every offset and length comes from the
//! peer, so each access is bounds-checked by the transport and a bad one is
//! an error for that call, never a crash.

use rgpu_dataplane::shm::ShmTransport;
use rgpu_dataplane::tcp::TcpUringTransport;
use rgpu_dataplane::Transport;
use rgpu_proto::CudaError;
use rgpu_ring::Slab;

/// Bounds-checked views into a shared arena.
pub trait ArenaAccess {
    /// The `len` bytes at `offset`.
    ///
    /// # Errors
    /// [`CudaError::INVALID_VALUE`] when there is no arena or the range is
    /// outside it.
    fn arena_read(&self, offset: u64, len: u64) -> Result<&[u8], CudaError>;
    /// The `len` bytes at `offset`, writable.
    ///
    /// # Errors
    /// As [`ArenaAccess::arena_read`].
    fn arena_write(&mut self, offset: u64, len: u64) -> Result<&mut [u8], CudaError>;
}

/// No arena: every access fails (tcp, the simulator).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoArena;

impl ArenaAccess for NoArena {
    fn arena_read(&self, _offset: u64, _len: u64) -> Result<&[u8], CudaError> {
        Err(CudaError::INVALID_VALUE)
    }
    fn arena_write(&mut self, _offset: u64, _len: u64) -> Result<&mut [u8], CudaError> {
        Err(CudaError::INVALID_VALUE)
    }
}

impl ArenaAccess for ShmTransport {
    fn arena_read(&self, offset: u64, len: u64) -> Result<&[u8], CudaError> {
        self.slab(Slab { offset, len })
            .map_err(|_| CudaError::INVALID_VALUE)
    }
    fn arena_write(&mut self, offset: u64, len: u64) -> Result<&mut [u8], CudaError> {
        self.slab_mut(Slab { offset, len })
            .map_err(|_| CudaError::INVALID_VALUE)
    }
}

impl ArenaAccess for TcpUringTransport {
    fn arena_read(&self, offset: u64, len: u64) -> Result<&[u8], CudaError> {
        NoArena.arena_read(offset, len)
    }
    fn arena_write(&mut self, _offset: u64, _len: u64) -> Result<&mut [u8], CudaError> {
        Err(CudaError::INVALID_VALUE)
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
