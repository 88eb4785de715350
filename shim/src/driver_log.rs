//! The driver's error log as applications see it (`cuLogsRegisterCallback`, CUDA 12.9): the
//! shim's own `warn` and `error` lines, handed to the callbacks an application registered.
//!
//! Why: PyTorch (`libc10_cuda.so`) registers a callback and appends what it receives to its CUDA
//! error texts ("The CUDA driver logged these messages…"). The shim's reasons for refusing a
//! call (pinned memory exhausted, an unsupported entry point, an image too large) then reach the
//! Python exception, not only stderr. Errors the worker found (a refused kernel) carry only their
//! code on the wire, so they are not in this log. See `docs/shim.md` (PyTorch).
//!
//! [`DriverLogLayer`] is a `tracing` layer installed by `logging::init`; it sees events at
//! `warn` and above from the shim whatever `RGPU_LOG` says.

use std::cell::Cell;
use std::ffi::{c_char, c_void};
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use crate::cuda_types::{CUresult, CUDA_ERROR_INVALID_VALUE, CUDA_ERROR_OUT_OF_MEMORY};

/// `CU_LOG_LEVEL_ERROR`.
pub const CU_LOG_LEVEL_ERROR: u32 = 0;
/// `CU_LOG_LEVEL_WARNING`.
pub const CU_LOG_LEVEL_WARNING: u32 = 1;
/// Most callbacks registered at once (a further registration is `CUDA_ERROR_OUT_OF_MEMORY`).
pub const CALLBACKS_MAX: usize = 16;
/// Longest message handed to a callback, in bytes (longer ones are cut at a char boundary).
pub const MESSAGE_BYTES_MAX: usize = 1024;

/// `CUlogsCallback`: `void (*)(void *data, CUlogLevel level, char *message, size_t length)`.
pub type CUlogsCallback = unsafe extern "C" fn(*mut c_void, u32, *mut c_char, usize);

/// One registration: the handle given out, the function and the user's pointer (kept as an
/// address: the shim never dereferences it).
#[derive(Clone, Copy)]
struct Registration {
    handle: u64,
    callback: CUlogsCallback,
    user_data: usize,
}

struct Callbacks {
    list: Vec<Registration>,
    next_handle: u64,
}

/// Handles start here so that a handle is never null and unlikely to match other numbers.
const HANDLE_FIRST: u64 = 0x106_0000_0001;

static CALLBACKS: Mutex<Callbacks> = Mutex::new(Callbacks {
    list: Vec::new(),
    next_handle: HANDLE_FIRST,
});

fn callbacks() -> std::sync::MutexGuard<'static, Callbacks> {
    // Each update is one push or remove, so a lock poisoned elsewhere still guards a
    // consistent list.
    CALLBACKS.lock().unwrap_or_else(PoisonError::into_inner)
}

thread_local! {
    /// Set while this thread runs callbacks: a message logged by a callback (it may call the
    /// driver) is not delivered again, so delivery never recurses.
    static DELIVERING: Cell<bool> = const { Cell::new(false) };
}

/// Registers `callback` with `user_data`; returns its handle.
///
/// # Errors
/// `CUDA_ERROR_OUT_OF_MEMORY` when [`CALLBACKS_MAX`] are registered.
pub fn register(callback: CUlogsCallback, user_data: *mut c_void) -> Result<u64, CUresult> {
    let mut c = callbacks();
    if c.list.len() >= CALLBACKS_MAX {
        return Err(CUDA_ERROR_OUT_OF_MEMORY);
    }
    let handle = c.next_handle;
    c.next_handle += 1;
    c.list.push(Registration {
        handle,
        callback,
        user_data: user_data as usize,
    });
    Ok(handle)
}

/// Removes registration `handle`.
///
/// # Errors
/// `CUDA_ERROR_INVALID_VALUE` for a handle not registered (or already removed).
pub fn unregister(handle: u64) -> Result<(), CUresult> {
    let mut c = callbacks();
    let at = c
        .list
        .iter()
        .position(|r| r.handle == handle)
        .ok_or(CUDA_ERROR_INVALID_VALUE)?;
    c.list.remove(at);
    Ok(())
}

/// Hands `message` at `level` to every registered callback, on this thread, with no lock
/// held; nothing when called from inside a callback.
pub fn deliver(level: u32, message: &str) {
    let Ok(false) = DELIVERING.try_with(Cell::get) else {
        return;
    };
    let list: Vec<Registration> = callbacks().list.clone();
    if list.is_empty() {
        return;
    }
    let mut cut = message.len().min(MESSAGE_BYTES_MAX);
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    DELIVERING.set(true);
    for r in list {
        // A fresh NUL-terminated copy per callback: the callback gets a `char *` and may
        // write to it.
        let mut bytes = Vec::with_capacity(cut + 1);
        bytes.extend_from_slice(&message.as_bytes()[..cut]);
        bytes.push(0);
        // SAFETY: `callback` was registered by the application as a `CUlogsCallback`; it gets
        // the application's own `user_data` and a writable NUL-terminated buffer of `cut`
        // bytes plus the terminator, valid for the call.
        unsafe {
            (r.callback)(
                r.user_data as *mut c_void,
                level,
                bytes.as_mut_ptr().cast(),
                cut,
            )
        };
    }
    DELIVERING.set(false);
}

/// Collects an event's message and fields as `message key=value …`.
struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

/// The `tracing` layer feeding [`deliver`] with the shim's `warn` and `error` events.
pub struct DriverLogLayer;

impl<S: Subscriber> Layer<S> for DriverLogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let level = match *meta.level() {
            Level::ERROR => CU_LOG_LEVEL_ERROR,
            Level::WARN => CU_LOG_LEVEL_WARNING,
            _ => return,
        };
        if !meta.target().starts_with("rgpu") || callbacks().list.is_empty() {
            return;
        }
        let mut text = Text(String::new());
        event.record(&mut text);
        deliver(level, &text.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    /// What the test callback received: (user data, level, message).
    static SEEN: StdMutex<Vec<(usize, u32, String)>> = StdMutex::new(Vec::new());
    /// The tests share the process-wide registry; they run one at a time.
    static SERIAL: StdMutex<()> = StdMutex::new(());

    unsafe extern "C" fn record(data: *mut c_void, level: u32, msg: *mut c_char, len: usize) {
        // SAFETY: `deliver` passes `len` readable bytes followed by a NUL.
        let bytes = unsafe { std::slice::from_raw_parts(msg.cast::<u8>(), len + 1) };
        assert_eq!(bytes[len], 0, "NUL-terminated");
        let text = String::from_utf8_lossy(&bytes[..len]).into_owned();
        SEEN.lock().unwrap().push((data as usize, level, text));
        // A message logged from inside a callback is not delivered again.
        deliver(CU_LOG_LEVEL_ERROR, "from inside");
    }

    #[test]
    fn registered_callbacks_get_messages_until_unregistered() {
        let _serial = SERIAL.lock().unwrap();
        SEEN.lock().unwrap().clear();
        let a = register(record, 7 as *mut c_void).unwrap();
        let b = register(record, 9 as *mut c_void).unwrap();
        assert_ne!(a, b);
        deliver(CU_LOG_LEVEL_WARNING, "pinned host memory exhausted");
        unregister(a).unwrap();
        deliver(CU_LOG_LEVEL_ERROR, "second");
        unregister(b).unwrap();
        deliver(CU_LOG_LEVEL_ERROR, "nobody listens");
        let seen = SEEN.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![
                (
                    7,
                    CU_LOG_LEVEL_WARNING,
                    "pinned host memory exhausted".to_owned()
                ),
                (
                    9,
                    CU_LOG_LEVEL_WARNING,
                    "pinned host memory exhausted".to_owned()
                ),
                (9, CU_LOG_LEVEL_ERROR, "second".to_owned()),
            ]
        );
        assert_eq!(unregister(a), Err(CUDA_ERROR_INVALID_VALUE));
    }

    #[test]
    fn registrations_are_bounded_and_long_messages_cut() {
        let _serial = SERIAL.lock().unwrap();
        SEEN.lock().unwrap().clear();
        let handles: Vec<u64> = (0..CALLBACKS_MAX)
            .map(|i| register(record, i as *mut c_void).unwrap())
            .collect();
        assert_eq!(
            register(record, std::ptr::null_mut()),
            Err(CUDA_ERROR_OUT_OF_MEMORY)
        );
        for h in &handles[1..] {
            unregister(*h).unwrap();
        }
        deliver(CU_LOG_LEVEL_ERROR, &"é".repeat(MESSAGE_BYTES_MAX));
        unregister(handles[0]).unwrap();
        let seen = SEEN.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        assert!(seen[0].2.len() <= MESSAGE_BYTES_MAX && seen[0].2.len() >= MESSAGE_BYTES_MAX - 1);
        assert!(seen[0].2.chars().all(|c| c == 'é'));
    }
}
