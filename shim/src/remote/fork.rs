//! `fork()` safety: `pthread_atfork` handlers that keep a forked child from inheriting a
//! held shim lock, and the rule that a child of a process with a live session never uses it.
//!
//! Exists because PyTorch's `DataLoader` and Python's `multiprocessing` (fork start method)
//! fork processes that have the shim connected. The child shares the parent's transport (the
//! same socket, the same shared-memory rings), so one byte sent from the child corrupts the
//! parent's session. CUDA's own rule is the one kept here: a child forked after the parent
//! initialized CUDA cannot use it; `cuInit` and every other call answer
//! `CUDA_ERROR_NOT_INITIALIZED` there (what drivers return in that state: triton-lang/triton
//! pull request 10443 quotes rc=3 from `cuInit` and `cuDeviceGetCount` in such a child;
//! PyTorch refuses earlier with "Cannot re-initialize CUDA in forked subprocess"). The child
//! does not connect afresh either: its copy of the CUDA runtime believes it is initialized
//! and would mix state from two sessions.
//!
//! The handlers ([`register`], once per process, before the first connect):
//! * prepare: takes the session's locks in their documented order (see
//!   [`super::session::lock_for_fork`]), so no other thread is inside a shim call or half
//!   way through a connect when the address space is copied;
//! * parent: releases them;
//! * child: releases them and, when the parent had a live session, marks this process
//!   [`State::Inherited`]. Only atomic stores and futex unlocks run there (no allocation, no
//!   logging: the child of a multi-threaded process may only make async-signal-safe calls);
//!   the first entry point that meets the mark logs it.
//!
//! The child never closes the parent's transport: the session lives in a `static` that is
//! never dropped, so no goodbye is sent at exit, and the flusher thread does not exist in the
//! child (threads are not copied by `fork`) and is never started again there.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use crate::cuda_types::{CUresult, CUDA_ERROR_NOT_INITIALIZED, CUDA_ERROR_NO_DEVICE, CUDA_SUCCESS};

/// Where this process stands with respect to the session (for the entry points' answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No `cuInit` has decided yet (the process may still connect).
    Fresh,
    /// This process connected and owns its session.
    Connected,
    /// `cuInit` found no usable server; the process reports no devices.
    Unavailable,
    /// A child forked from a process with a live session: the session is the parent's and
    /// is never used here.
    Inherited,
}

impl State {
    /// The state a child starts in when a process in state `self` forks.
    #[must_use]
    pub const fn after_fork_in_child(self) -> Self {
        match self {
            State::Connected | State::Inherited => State::Inherited,
            // Nothing to share: the child decides for itself at its own `cuInit` (as with
            // CUDA, forking before initialization is fine).
            State::Fresh => State::Fresh,
            // The child's copy of "no server" is its own answer too.
            State::Unavailable => State::Unavailable,
        }
    }

    /// What `cuInit` answers in this state (`Fresh` has not decided: the caller connects).
    #[must_use]
    pub const fn init_answer(self) -> Option<CUresult> {
        match self {
            State::Fresh => None,
            State::Connected => Some(CUDA_SUCCESS),
            State::Unavailable => Some(CUDA_ERROR_NO_DEVICE),
            State::Inherited => Some(CUDA_ERROR_NOT_INITIALIZED),
        }
    }

    /// Whether an entry point other than `cuInit` may use the session in this state (else it
    /// answers `CUDA_ERROR_NOT_INITIALIZED`).
    #[must_use]
    pub const fn may_use_session(self) -> bool {
        matches!(self, State::Connected)
    }
}

/// Set in a child forked from a process with a live session (see [`State::Inherited`]).
static INHERITED: AtomicBool = AtomicBool::new(false);
/// Whether the child's first entry point has logged the inherited session yet.
static INHERITED_LOGGED: AtomicBool = AtomicBool::new(false);

/// Whether this process is a fork child of a process with a live session. One relaxed load.
#[inline]
#[must_use]
pub fn inherited() -> bool {
    INHERITED.load(Ordering::Relaxed)
}

/// A thread-local with a destructor: gone once the thread is past its thread-local
/// destructors. The runtime's `atexit` teardown runs after them (glibc calls the main
/// thread's destructors first in `exit`), and a `tracing` event there panics inside the
/// subscriber; a child that calls no CUDA function before `exit()` meets the mark first
/// there. It only says "gone" if it was alive before, so the prepare handler touches it on
/// the forking thread (the child's only thread) before the fork.
struct Alive;
impl Drop for Alive {
    fn drop(&mut self) {}
}

thread_local! {
    static ALIVE: Alive = const { Alive };
}

/// Logs, once per process, why calls fail in a forked child. Called from entry points (never
/// from the fork handlers); skipped (and left for a later call) on a thread past its
/// thread-local destructors.
pub(crate) fn log_inherited_once() {
    if INHERITED_LOGGED.load(Ordering::Relaxed) || ALIVE.try_with(|_| ()).is_err() {
        return;
    }
    if !INHERITED_LOGGED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            pid = std::process::id(),
            "rgpu shim: this process was forked from one that had initialized CUDA; its CUDA \
             calls fail with CUDA_ERROR_NOT_INITIALIZED (use the spawn start method, or \
             initialize CUDA only after forking)"
        );
    }
}

/// The locks held from the prepare handler to the parent or child handler.
struct HeldSlot(UnsafeCell<Option<super::session::ForkLocks>>);

// SAFETY: the slot is written by the prepare handler and emptied by the parent or child
// handler of the same `fork`, all on the forking thread, while that thread holds the
// session's init lock (taken first by `lock_for_fork`). Two threads forking at once are
// therefore serialized by that lock (and by glibc's own atfork lock), so the slot is never
// accessed concurrently.
unsafe impl Sync for HeldSlot {}

static HELD: HeldSlot = HeldSlot(UnsafeCell::new(None));

/// Registers the fork handlers, once per process. Called before the first connect, so a
/// fork during a connect waits for it. A failed registration is logged: forks then copy
/// whatever lock is held, as before.
pub(crate) fn register() {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| {
        // SAFETY: the three handlers are `extern "C"` functions with no arguments that
        // never unwind (each body runs under `catch_unwind`) and stay loaded for the life of
        // the process (the shim is never unloaded: it is the process's libcuda).
        let rc = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
        if rc != 0 {
            tracing::warn!(
                rc,
                "rgpu shim: pthread_atfork failed; a forked child may inherit a held lock"
            );
        }
    });
}

/// Before `fork`: take the session's locks (waits for a call in flight on another thread,
/// at most the reply timeout).
extern "C" fn prepare() {
    let _ = std::panic::catch_unwind(|| {
        // Registers its destructor now (this may allocate: fine before the fork), so the
        // child can tell when it is past its thread-local destructors.
        let _ = ALIVE.try_with(|_| ());
        let locks = super::session::lock_for_fork();
        // SAFETY: see `HeldSlot`: only the forking thread touches the slot, and it now
        // holds the init lock that serializes forks.
        unsafe { *HELD.0.get() = Some(locks) };
    });
}

/// After `fork`, in the parent: release the locks.
extern "C" fn parent() {
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: as in `prepare`; dropping the guards only unlocks (atomic + futex wake).
        drop(unsafe { (*HELD.0.get()).take() });
    });
}

/// After `fork`, in the child: mark an inherited session, then release the locks. Only
/// async-signal-safe work: atomic loads and stores, futex unlocks.
extern "C" fn child() {
    let _ = std::panic::catch_unwind(|| {
        let before = super::session::state();
        if before.after_fork_in_child() == State::Inherited {
            INHERITED.store(true, Ordering::Relaxed);
        }
        // SAFETY: as in `prepare` (the child has only the forking thread). Dropping the
        // guards unlocks this process's copies of the locks; nothing is freed (guards own no
        // heap memory).
        drop(unsafe { (*HELD.0.get()).take() });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serializes the tests that run the handlers (they share the process's one slot).
    static HANDLER_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    const ALL: [State; 4] = [
        State::Fresh,
        State::Connected,
        State::Unavailable,
        State::Inherited,
    ];

    #[test]
    fn a_live_session_is_never_usable_in_a_child_nor_its_children() {
        let child = State::Connected.after_fork_in_child();
        assert_eq!(child, State::Inherited);
        assert_eq!(child.after_fork_in_child(), State::Inherited);
        assert!(!child.may_use_session());
        assert_eq!(child.init_answer(), Some(CUDA_ERROR_NOT_INITIALIZED));
    }

    #[test]
    fn forking_before_init_leaves_the_child_free_to_connect() {
        assert_eq!(State::Fresh.after_fork_in_child(), State::Fresh);
        assert_eq!(State::Fresh.init_answer(), None);
        assert_eq!(
            State::Unavailable.after_fork_in_child().init_answer(),
            Some(CUDA_ERROR_NO_DEVICE)
        );
    }

    #[test]
    fn only_the_owner_uses_the_session() {
        let users: Vec<State> = ALL.into_iter().filter(|s| s.may_use_session()).collect();
        assert_eq!(users, [State::Connected]);
        assert_eq!(State::Connected.init_answer(), Some(CUDA_SUCCESS));
        // No state a fork produces can use a session it did not open itself.
        for s in ALL {
            assert!(!s.after_fork_in_child().may_use_session(), "{s:?}");
        }
    }

    #[test]
    fn handlers_without_a_session_leave_the_process_usable() {
        // This test process has no session: prepare takes only the init lock (and stderr),
        // parent releases them, and nothing is marked inherited.
        let _serial = HANDLER_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        prepare();
        // SAFETY: test-only peek at the slot on the thread that filled it.
        assert!(unsafe { (*HELD.0.get()).is_some() });
        parent();
        // SAFETY: as above.
        assert!(unsafe { (*HELD.0.get()).is_none() });
        assert!(!inherited());
        // The locks are free again: a second round does not block.
        prepare();
        parent();
    }

    #[test]
    fn a_real_fork_runs_the_handlers_and_the_child_finds_the_locks_free() {
        /// Bound on waiting for the child (liveness, not timing), in 10 ms steps.
        const CHILD_WAIT_STEPS_MAX: u32 = 2_000;
        let _serial = HANDLER_TESTS.lock().unwrap_or_else(|p| p.into_inner());
        register();
        // SAFETY: the child only takes and drops the shim's locks (released by the child
        // handler; a lock left held would hang it, which the bounded wait below reports) and
        // leaves with `_exit`, running no destructor of the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // No session in this test process: the child is `Fresh`, not inherited.
            let ok = !inherited() && super::super::session::state() == State::Fresh;
            drop(super::super::session::lock_for_fork());
            // SAFETY: ends the child at once, as after a fork in a threaded process.
            unsafe { libc::_exit(if ok { 0 } else { 3 }) };
        }
        let mut status = 0;
        let mut waited = 0;
        loop {
            // SAFETY: `pid` is our child; `status` is writable.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                break;
            }
            assert_eq!(r, 0, "waitpid failed");
            waited += 1;
            if waited > CHILD_WAIT_STEPS_MAX {
                // SAFETY: our own child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                panic!("the forked child blocked (a lock inherited held?)");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(libc::WIFEXITED(status), "child status {status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), 0);
        // The parent handler released everything too.
        drop(super::super::session::lock_for_fork());
    }
}
