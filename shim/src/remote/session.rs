//! The process-wide session: connected once on the first `cuInit`, then shared by every entry
//! point. Holds the connection (behind a mutex) and the device facts the server reported.
//!
//! Lock order (threads nest them only this way, and the fork handlers take them all in it):
//! the init lock, [`Session::attribute`]'s cache, [`Session::conn`], [`Session::handles`],
//! then stderr (the log writer). A forked child never uses a session its parent opened
//! (see [`super::fork`]).

use std::collections::HashMap;
use std::io::StderrLock;
use std::sync::{Mutex, MutexGuard, OnceLock};

use rgpu_proto::{Call, CudaError, DeviceGetName, DeviceGetUuid, Reply, RequestDevices};

use super::config::{self, ConfigError, ServerConfig};
use super::conn::{CallError, Conn, ConnError};
use super::fork::{self, State};
use super::handles::Handles;
use crate::cuda_types::CUresult;

/// Most distinct attribute numbers cached; attribute numbers at or above this are refused
/// locally with `CUDA_ERROR_INVALID_VALUE` (CUDA 12.x ends near 140).
pub const ATTRIBUTE_NUMBER_MAX: u32 = 512;

/// What the server told us about the granted device(s), fetched once at connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFacts {
    /// Devices granted (the shim exposes this many ordinals; always 1 in this slice).
    pub count: u32,
    /// Device 0's name.
    pub name: String,
    /// Memory granted per device in bytes: the quota, reported as total memory.
    pub total_bytes: u64,
    /// Device 0's UUID.
    pub uuid: [u8; 16],
}

/// Why there is no remote GPU.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerUnavailable {
    /// The environment does not describe a usable server.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The server could not be reached or refused us.
    #[error("cannot use the GPU server {url}: {source}")]
    Unreachable {
        /// The configured URL.
        url: String,
        /// What failed.
        source: CallError,
    },
    /// This process was forked from one with a live session; that session is the parent's.
    #[error("this process was forked after its parent initialized CUDA")]
    InheritedByFork,
}

impl ServerUnavailable {
    /// What `cuInit` (and `cuDeviceGetCount`) answer: `CUDA_ERROR_NOT_INITIALIZED` in a
    /// forked child (as CUDA does there), else `CUDA_ERROR_NO_DEVICE`.
    #[must_use]
    pub fn curesult(&self) -> CUresult {
        match self {
            ServerUnavailable::InheritedByFork => crate::cuda_types::CUDA_ERROR_NOT_INITIALIZED,
            _ => crate::cuda_types::CUDA_ERROR_NO_DEVICE,
        }
    }
}

/// A live connection plus cached facts.
pub struct Session {
    conn: Mutex<Conn>,
    /// The granted device's facts.
    pub facts: DeviceFacts,
    attributes: Mutex<HashMap<u32, i32>>,
    /// Client-allocated streams and events. Lock order: [`Session::conn`] first, then this.
    handles: Mutex<Handles>,
}

impl Session {
    /// Connects, requests devices and caches the device facts.
    pub fn connect(cfg: &ServerConfig) -> Result<Self, CallError> {
        let mut conn = Conn::open(cfg)?;
        let (count, total_bytes) = conn.sync(
            &Call::RequestDevices(RequestDevices {
                count: 1,
                fraction_milli: cfg.fraction_milli,
                memory_bytes: cfg.memory_bytes,
            }),
            |r| match r {
                Reply::DevicesGranted(g) => Some((g.count, g.memory_bytes)),
                _ => None,
            },
        )?;
        // One device was asked for; the facts below describe exactly that one.
        if count != 1 {
            tracing::warn!(
                count,
                "rgpu shim: the server granted other than the 1 device requested"
            );
            return Err(CallError::Cuda(CudaError(
                crate::cuda_types::CUDA_ERROR_NO_DEVICE,
            )));
        }
        let name = conn.sync(
            &Call::DeviceGetName(DeviceGetName { device: 0 }),
            |r| match r {
                Reply::DeviceName(n) => Some(String::from_utf8_lossy(n.name.0).into_owned()),
                _ => None,
            },
        )?;
        let uuid = conn.sync(
            &Call::DeviceGetUuid(DeviceGetUuid { device: 0 }),
            |r| match r {
                Reply::DeviceUuid(u) => Some(u.uuid),
                _ => None,
            },
        )?;
        let facts = DeviceFacts {
            count,
            name,
            total_bytes,
            uuid,
        };
        tracing::info!(url = %cfg.url, ?facts, "rgpu shim: connected");
        Ok(Self {
            conn: Mutex::new(conn),
            facts,
            attributes: Mutex::new(HashMap::new()),
            handles: Mutex::new(Handles::default()),
        })
    }

    /// The connection, for one call at a time.
    pub fn conn(&self) -> MutexGuard<'_, Conn> {
        // A poisoned lock means a call panicked mid-way (caught by ffi_guard); the client's
        // own state machine stays consistent, so keep using it.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection if no other thread holds it now (for destructors, which must not block).
    pub fn conn_try(&self) -> Option<MutexGuard<'_, Conn>> {
        match self.conn.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// The stream and event tables. Take [`Session::conn`] first when both are needed.
    pub fn handles(&self) -> MutexGuard<'_, Handles> {
        // Poisoning: as for `conn`, the tables stay consistent (each update is one step).
        self.handles.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `cuDeviceGetAttribute` for device 0: cached, else asked once and remembered.
    pub fn attribute(&self, attribute: u32) -> Result<i32, CallError> {
        if attribute >= ATTRIBUTE_NUMBER_MAX {
            return Err(CallError::Cuda(CudaError::INVALID_VALUE));
        }
        let mut cache = self.attributes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = cache.get(&attribute) {
            return Ok(*v);
        }
        let call = Call::DeviceGetAttribute(rgpu_proto::DeviceGetAttribute {
            device: 0,
            attribute,
        });
        let value = self.conn().sync(&call, |r| match r {
            Reply::DeviceAttribute(a) => Some(a.value),
            _ => None,
        })?;
        debug_assert!(cache.len() < ATTRIBUTE_NUMBER_MAX as usize);
        cache.insert(attribute, value);
        Ok(value)
    }
}

/// The session (or why there is none), decided once by the first `cuInit`.
static CURRENT: OnceLock<Result<Session, ServerUnavailable>> = OnceLock::new();

/// Held around the first connect, and by the fork handlers: a fork never copies a connect
/// half done (the child would wait forever on its copy of [`CURRENT`]'s initialization).
static INIT: Mutex<()> = Mutex::new(());

/// The answer in a forked child (see [`super::fork`]).
static INHERITED_BY_FORK: ServerUnavailable = ServerUnavailable::InheritedByFork;

/// The process-wide session, connected on first use; the reason is logged once on failure.
/// In a child forked from a process with a live session: [`ServerUnavailable::InheritedByFork`],
/// never a fresh connect.
pub fn current() -> Result<&'static Session, &'static ServerUnavailable> {
    if fork::inherited() {
        fork::log_inherited_once();
        return Err(&INHERITED_BY_FORK);
    }
    let result = match CURRENT.get() {
        Some(r) => r,
        None => {
            // Before the first connect, so a fork during it waits for it.
            fork::register();
            let _init = lock(&INIT);
            CURRENT.get_or_init(connect_from_env)
        }
    };
    result.as_ref().inspect(|session| {
        // Once per process: sends queued async calls when the program makes no call.
        super::conn::start_flusher(&session.conn);
    })
}

fn connect_from_env() -> Result<Session, ServerUnavailable> {
    let result = config::from_lookup(|k| std::env::var(k).ok())
        .map_err(ServerUnavailable::from)
        .and_then(|cfg| {
            Session::connect(&cfg).map_err(|source| ServerUnavailable::Unreachable {
                url: cfg.url.clone(),
                source,
            })
        });
    if let Err(why) = &result {
        tracing::warn!("rgpu shim: reporting no CUDA devices: {why}");
    }
    result
}

/// The session for an entry point other than `cuInit`: `CUDA_ERROR_NOT_INITIALIZED` before a
/// successful `cuInit`, as the driver answers, and in a forked child (see [`super::fork`]).
pub fn initialized() -> Result<&'static Session, CUresult> {
    if fork::inherited() {
        fork::log_inherited_once();
        return Err(crate::cuda_types::CUDA_ERROR_NOT_INITIALIZED);
    }
    match CURRENT.get() {
        Some(Ok(session)) => Ok(session),
        _ => Err(crate::cuda_types::CUDA_ERROR_NOT_INITIALIZED),
    }
}

/// Where this process stands (atomic loads only: the fork child handler calls it).
pub(crate) fn state() -> State {
    if fork::inherited() {
        return State::Inherited;
    }
    match CURRENT.get() {
        None => State::Fresh,
        Some(Ok(_)) => State::Connected,
        Some(Err(_)) => State::Unavailable,
    }
}

/// Every shim lock a forked child could otherwise inherit held, taken in the module's lock
/// order by [`lock_for_fork`]; dropping it releases them.
pub(crate) struct ForkLocks {
    // Field order is drop order: the reverse of the lock order is not needed for unlocking,
    // but keeps the reasoning simple.
    _stderr: StderrLock<'static>,
    _session: Option<SessionLocks>,
    _init: MutexGuard<'static, ()>,
}

struct SessionLocks {
    _handles: MutexGuard<'static, Handles>,
    _conn: MutexGuard<'static, Conn>,
    _attributes: MutexGuard<'static, HashMap<u32, i32>>,
}

/// Takes the init lock, the session's locks (when there is a session) and stderr, in the
/// lock order. Waits for a call in flight on another thread (bounded by its reply timeout).
pub(crate) fn lock_for_fork() -> ForkLocks {
    let init = lock(&INIT);
    let session = match CURRENT.get() {
        Some(Ok(s)) => {
            let attributes = lock(&s.attributes);
            let conn = lock(&s.conn);
            let handles = lock(&s.handles);
            Some(SessionLocks {
                _handles: handles,
                _conn: conn,
                _attributes: attributes,
            })
        }
        _ => None,
    };
    ForkLocks {
        _stderr: std::io::stderr().lock(),
        _session: session,
        _init: init,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Poisoning: as in `Session::conn`, the protected state stays consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Maps a remote failure to the `CUresult` the application sees. A device error passes
/// through; a connection failure is logged once per entry point and becomes
/// `CUDA_ERROR_DEVICE_UNAVAILABLE` (lost link) or `CUDA_ERROR_UNKNOWN` (anything else).
pub fn to_curesult(entry: &'static str, err: &CallError) -> CUresult {
    match err {
        CallError::Cuda(e) => e.code(),
        CallError::Conn(c) => {
            if crate::logging::once_per_name("conn-error", entry) {
                tracing::error!(entry, error = %c, "rgpu shim: remote call failed");
            }
            match c {
                ConnError::Lost { .. }
                | ConnError::Transport { .. }
                | ConnError::Timeout { .. } => crate::cuda_types::CUDA_ERROR_DEVICE_UNAVAILABLE,
                _ => crate::cuda_types::CUDA_ERROR_UNKNOWN,
            }
        }
    }
}
