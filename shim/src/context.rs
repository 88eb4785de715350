//! Contexts, tracked entirely in the shim: one primary context per granted device, each
//! thread's current-context stack, and the runtime's context-local storage.
//!
//! The server holds one CUDA context per client connection; nothing here needs a round trip.
//! The primary context's handle is the address of a private static, so it is non-null,
//! unique, and never dereferenced by the application.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use crate::cuda_types::{
    CUcontext, CUresult, CUDA_ERROR_INVALID_CONTEXT, CUDA_ERROR_INVALID_HANDLE,
    CUDA_ERROR_INVALID_VALUE, CUDA_ERROR_OUT_OF_MEMORY,
};

/// Deepest per-thread context stack (`cuCtxPushCurrent`).
pub const CTX_STACK_DEPTH_MAX: usize = 64;
/// Most context-local-storage entries (the runtime uses a handful).
pub const CLS_ENTRIES_MAX: usize = 256;

/// The object whose address is the primary context's handle.
static PRIMARY_CTX_ANCHOR: u8 = 0;
/// Retain count of the primary context (0: inactive).
static PRIMARY_RETAINS: AtomicU32 = AtomicU32::new(0);
/// Flags set with `cuDevicePrimaryCtxSetFlags`.
static PRIMARY_FLAGS: AtomicU32 = AtomicU32::new(0);

thread_local! {
    static STACK: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// The primary context's handle.
pub fn primary() -> CUcontext {
    std::ptr::addr_of!(PRIMARY_CTX_ANCHOR)
        .cast_mut()
        .cast::<c_void>()
}

fn is_known(ctx: CUcontext) -> bool {
    ctx == primary()
}

/// `cuDevicePrimaryCtxRetain`: activates (or re-retains) the primary context.
pub fn retain() -> CUcontext {
    let before = PRIMARY_RETAINS.fetch_add(1, Ordering::AcqRel);
    debug_assert!(before < u32::MAX);
    primary()
}

/// `cuDevicePrimaryCtxRelease`.
pub fn release() -> Result<(), CUresult> {
    PRIMARY_RETAINS
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .map(drop)
        .map_err(|_| CUDA_ERROR_INVALID_CONTEXT)
}

/// `cuDevicePrimaryCtxReset`: drops every retain.
pub fn reset() {
    PRIMARY_RETAINS.store(0, Ordering::Release);
}

/// `cuDevicePrimaryCtxGetState`: (flags, active).
pub fn state() -> (u32, bool) {
    (
        PRIMARY_FLAGS.load(Ordering::Acquire),
        PRIMARY_RETAINS.load(Ordering::Acquire) > 0,
    )
}

/// `cuDevicePrimaryCtxSetFlags`.
pub fn set_flags(flags: u32) {
    PRIMARY_FLAGS.store(flags, Ordering::Release);
}

/// `cuCtxGetCurrent`: the top of this thread's stack, or null.
/// After this thread's storage is gone (the runtime's `atexit` handlers), there is none.
pub fn current() -> CUcontext {
    STACK
        .try_with(|s| s.borrow().last().copied().unwrap_or(0) as CUcontext)
        .unwrap_or(std::ptr::null_mut())
}

/// `cuCtxSetCurrent`: replaces the top of the stack; null unbinds.
pub fn set_current(ctx: CUcontext) -> Result<(), CUresult> {
    if !ctx.is_null() && !is_known(ctx) {
        return Err(CUDA_ERROR_INVALID_CONTEXT);
    }
    STACK
        .try_with(|s| {
            let mut s = s.borrow_mut();
            s.pop();
            if !ctx.is_null() {
                s.push(ctx as usize);
            }
        })
        .map_err(|_| CUDA_ERROR_INVALID_CONTEXT)
}

/// `cuCtxPushCurrent`.
pub fn push(ctx: CUcontext) -> Result<(), CUresult> {
    if !is_known(ctx) {
        return Err(CUDA_ERROR_INVALID_CONTEXT);
    }
    STACK
        .try_with(|s| {
            let mut s = s.borrow_mut();
            if s.len() >= CTX_STACK_DEPTH_MAX {
                return Err(CUDA_ERROR_OUT_OF_MEMORY);
            }
            s.push(ctx as usize);
            Ok(())
        })
        .unwrap_or(Err(CUDA_ERROR_INVALID_CONTEXT))
}

/// `cuCtxPopCurrent`: the context popped.
pub fn pop() -> Result<CUcontext, CUresult> {
    STACK
        .try_with(|s| s.borrow_mut().pop().map(|c| c as CUcontext))
        .ok()
        .flatten()
        .ok_or(CUDA_ERROR_INVALID_CONTEXT)
}

/// The context a call addresses: `ctx`, or the current one when `ctx` is null.
pub fn resolve(ctx: CUcontext) -> Result<CUcontext, CUresult> {
    let ctx = if ctx.is_null() { current() } else { ctx };
    if is_known(ctx) {
        Ok(ctx)
    } else {
        Err(CUDA_ERROR_INVALID_CONTEXT)
    }
}

/// The context a storage call addresses: as [`resolve`], except that a null context with no
/// current one means the primary context while it is retained. The runtime clears its
/// storage from `atexit` handlers, where no thread has a current context any more; with one
/// context per process there is no other context it could mean.
fn resolve_storage(ctx: CUcontext) -> Result<CUcontext, CUresult> {
    if ctx.is_null() && current().is_null() && state().1 {
        return Ok(primary());
    }
    resolve(ctx)
}

static STORAGE: Mutex<Option<HashMap<usize, usize>>> = Mutex::new(None);

fn with_storage<R>(f: impl FnOnce(&mut HashMap<usize, usize>) -> R) -> R {
    // Poisoning only means a panic elsewhere; the map itself is always consistent.
    let mut guard = STORAGE.lock().unwrap_or_else(|p| p.into_inner());
    f(guard.get_or_insert_with(HashMap::new))
}

/// Context-local storage `put` (one context exists, so keys are global). The runtime's
/// destructor callback is not kept: the primary context is never destroyed while the
/// process runs.
pub fn storage_put(ctx: CUcontext, key: usize, value: usize) -> Result<(), CUresult> {
    resolve_storage(ctx)?;
    with_storage(|m| {
        if m.len() >= CLS_ENTRIES_MAX && !m.contains_key(&key) {
            return Err(CUDA_ERROR_OUT_OF_MEMORY);
        }
        m.insert(key, value);
        Ok(())
    })
}

/// Context-local storage `get`; a missing key is `CUDA_ERROR_INVALID_HANDLE`.
pub fn storage_get(ctx: CUcontext, key: usize) -> Result<usize, CUresult> {
    resolve_storage(ctx)?;
    with_storage(|m| m.get(&key).copied().ok_or(CUDA_ERROR_INVALID_HANDLE))
}

/// Context-local storage `delete`.
pub fn storage_delete(ctx: CUcontext, key: usize) -> Result<(), CUresult> {
    resolve_storage(ctx)?;
    with_storage(|m| m.remove(&key).map(drop).ok_or(CUDA_ERROR_INVALID_VALUE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_push_pop_set() {
        std::thread::spawn(|| {
            assert!(current().is_null());
            assert_eq!(pop(), Err(CUDA_ERROR_INVALID_CONTEXT));
            assert_eq!(
                push(std::ptr::dangling_mut()),
                Err(CUDA_ERROR_INVALID_CONTEXT)
            );
            push(primary()).unwrap();
            assert_eq!(current(), primary());
            assert_eq!(pop(), Ok(primary()));
            set_current(primary()).unwrap();
            set_current(primary()).unwrap();
            assert_eq!(current(), primary());
            set_current(std::ptr::null_mut()).unwrap();
            assert!(current().is_null());
            for _ in 0..CTX_STACK_DEPTH_MAX {
                push(primary()).unwrap();
            }
            assert_eq!(push(primary()), Err(CUDA_ERROR_OUT_OF_MEMORY));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn retain_release_and_storage() {
        let ctx = retain();
        assert_eq!(ctx, primary());
        assert!(state().1);
        release().unwrap();
        storage_put(primary(), 7, 70).unwrap();
        assert_eq!(storage_get(primary(), 7), Ok(70));
        assert_eq!(storage_get(primary(), 8), Err(CUDA_ERROR_INVALID_HANDLE));
        storage_delete(primary(), 7).unwrap();
        assert_eq!(storage_get(primary(), 7), Err(CUDA_ERROR_INVALID_HANDLE));
        // No current context on a fresh thread: a null context is invalid there, unless the
        // primary context is retained (the runtime's atexit cleanup).
        std::thread::spawn(|| {
            assert_eq!(
                storage_get(std::ptr::null_mut(), 1),
                Err(CUDA_ERROR_INVALID_CONTEXT)
            );
            storage_put(primary(), 9, 90).unwrap();
            retain();
            assert_eq!(storage_get(std::ptr::null_mut(), 9), Ok(90));
            release().unwrap();
            assert_eq!(release(), Err(CUDA_ERROR_INVALID_CONTEXT));
        })
        .join()
        .unwrap();
    }
}
