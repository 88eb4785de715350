//! Setting up the io_uring instance, probing its features, pushing SQEs and
//! waiting for completions with a deadline.
//!
//! Exists to keep ring plumbing (and the `unsafe` of queueing SQEs that point
//! at memory) apart from the transport's send/receive logic.

use std::io;
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types, IoUring, Probe};

use super::availability;
use super::completion::TAG_TICK;
use crate::deadline;
use crate::error::{Result, TransportError, UringUnavailableCause};

/// What the running kernel offers beyond the baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Caps {
    /// Multishot `RECV` with provided-buffer rings (5.19+).
    pub recv_multishot: bool,
    /// `SEND_ZC` (6.0+).
    pub send_zc: bool,
    /// `SENDMSG_ZC` (6.1+).
    pub send_msg_zc: bool,
}

/// Builds the ring, mapping set-up failures to typed errors.
///
/// With `single_thread`, the ring is created disabled with
/// `SINGLE_ISSUER | DEFER_TASKRUN`; [`enable`] must run on the thread that
/// will drive it before the first submission.
pub(crate) fn setup(sq_entries: u32, single_thread: bool) -> Result<(IoUring, Caps)> {
    let sysctl = availability::read_sysctl();
    availability::precheck(sysctl)?;
    let mut builder = IoUring::builder();
    builder.setup_cqsize(sq_entries * 4);
    if single_thread {
        // Completions' task work then runs inside our own io_uring_enter
        // instead of interrupting the thread: cheaper per message.
        builder
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_r_disabled();
    }
    let ring = builder
        .build(sq_entries)
        .map_err(|e| availability::classify_setup_error(e, sysctl))?;
    if !ring.params().is_feature_ext_arg() {
        return Err(TransportError::UringUnavailable {
            cause: UringUnavailableCause::MissingFeature {
                feature: "IORING_FEAT_EXT_ARG (timed waits, Linux 5.11)",
            },
        });
    }
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| TransportError::io("io_uring probe", e))?;
    if !probe.is_supported(opcode::Send::CODE) || !probe.is_supported(opcode::Recv::CODE) {
        return Err(TransportError::UringUnavailable {
            cause: UringUnavailableCause::MissingFeature {
                feature: "IORING_OP_SEND/RECV (Linux 5.6)",
            },
        });
    }
    // Multishot recv shares the RECV opcode; PROVIDE_BUFFERS marks kernels with
    // buffer selection, and the buf-ring registration itself is the final test.
    let caps = Caps {
        recv_multishot: probe.is_supported(opcode::ProvideBuffers::CODE),
        send_zc: probe.is_supported(opcode::SendZc::CODE),
        send_msg_zc: probe.is_supported(opcode::SendMsgZc::CODE),
    };
    tracing::debug!(?caps, sq_entries, "io_uring ready");
    Ok((ring, caps))
}

/// Enables a ring created disabled; the calling thread becomes its only issuer.
pub(crate) fn enable(ring: &IoUring) -> Result<()> {
    ring.submitter()
        .register_enable_rings()
        .map_err(|e| TransportError::io("io_uring enable rings", e))
}

/// Queues one SQE, submitting first if the queue is full.
///
/// # Safety
///
/// Every buffer the entry points at must stay valid (and, for receives,
/// unaliased) until its final completion has been reaped.
pub(crate) unsafe fn push(ring: &mut IoUring, entry: &squeue::Entry) -> Result<()> {
    for _ in 0..2 {
        // SAFETY: forwarded to the caller's contract.
        if unsafe { ring.submission().push(entry) }.is_ok() {
            return Ok(());
        }
        ring.submit()
            .map_err(|e| TransportError::io("io_uring_enter (flush full SQ)", e))?;
    }
    Err(TransportError::io(
        "io_uring SQ push",
        io::Error::from(io::ErrorKind::WouldBlock),
    ))
}

/// Outcome of one [`wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waited {
    /// Completions may be available; process them and re-check.
    Ready,
    /// The deadline passed (pending SQEs were still submitted).
    Expired,
}

/// The coarse "tick" that bounds long waits without arming a timer per wait.
///
/// A per-wait timeout (`IORING_ENTER_EXT_ARG` timespec) costs an hrtimer
/// start and cancel on every blocking wait, which is measurable per message.
/// Instead, long waits rely on one pending one-shot `TIMEOUT` request that
/// fires at most every `period`; a hot loop re-arms it at most once per
/// period. Waits shorter than a period use the precise per-wait timeout.
/// At most one tick is pending, so idle transports never pile up completions.
#[derive(Debug)]
pub(crate) struct Tick {
    /// Tick period; zero disables ticks (always per-wait timeouts).
    pub period: Duration,
    /// A tick request is in the kernel.
    pub pending: bool,
}

/// Submits pending SQEs and waits until `want` completions are queued, the
/// deadline passes, or (after `spins` cheap polls) the kernel returns.
/// A wait may return early (a tick, a signal); callers loop on their condition.
pub(crate) fn wait(
    ring: &mut IoUring,
    want: usize,
    deadline: Instant,
    spins: u32,
    tick: &mut Tick,
) -> Result<Waited> {
    let submit_err = |e| TransportError::io("io_uring_enter (submit)", e);
    if ring.completion().len() >= want {
        if !ring.submission().is_empty() {
            ring.submit().map_err(submit_err)?;
        }
        return Ok(Waited::Ready);
    }
    if spins > 0 {
        ring.submit().map_err(submit_err)?;
        for _ in 0..spins {
            if ring.completion().len() >= want {
                return Ok(Waited::Ready);
            }
            std::hint::spin_loop();
        }
    }
    let Some(left) = deadline::remaining(deadline) else {
        if !ring.submission().is_empty() {
            ring.submit().map_err(submit_err)?;
        }
        return Ok(Waited::Expired);
    };
    let result = if !tick.period.is_zero() && left > tick.period {
        if !tick.pending {
            let ts = types::Timespec::from(tick.period);
            let entry = opcode::Timeout::new(&ts).build().user_data(TAG_TICK);
            // SAFETY: the kernel reads the timespec while preparing the request,
            // which happens inside the submit below, while `ts` is alive.
            unsafe { push(ring, &entry) }?;
            tick.pending = true;
            ring.submitter().submit_and_wait(want)
        } else {
            ring.submitter().submit_and_wait(want)
        }
    } else {
        let ts = types::Timespec::from(left);
        let args = types::SubmitArgs::new().timespec(&ts);
        ring.submitter().submit_with_args(want, &args)
    };
    match result {
        Ok(_) => Ok(Waited::Ready),
        Err(e) => match e.raw_os_error() {
            // Timed out, interrupted, or CQ overflow backlog: the caller
            // reaps, re-checks its condition and the deadline, and waits again.
            Some(libc::ETIME | libc::EINTR | libc::EBUSY) => Ok(Waited::Ready),
            _ => Err(TransportError::io("io_uring_enter (wait)", e)),
        },
    }
}
