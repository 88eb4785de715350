//! The worker's side of admission: when its authenticated client makes the
//! first call, the worker asks the daemon (a [`WorkerMsg::Admit`] line on
//! stdout) and waits, bounded by [`ADMIT_TIMEOUT_MS`], for the answer on
//! stdin. Exists so the pool is only ever touched for clients that proved
//! the token, and the quota the backend enforces is the one admitted.

use std::io::{BufRead, Read, Write};
use std::os::fd::AsFd;

use rgpu_gpu_worker::{DeviceGrant, DeviceRequest};
use rgpu_proto::CudaError;

use crate::report::{Admission, WorkerMsg, ADMIT_TIMEOUT_MS, ANSWER_BYTES_MAX};

/// Asks the daemon for this session's share.
///
/// # Errors
/// `CUDA_ERROR_OUT_OF_MEMORY` when the pool refused (the request does not
/// fit), `CUDA_ERROR_INVALID_VALUE` for a malformed request,
/// `CUDA_ERROR_UNKNOWN` when the daemon did not answer in time or answered
/// nonsense (all logged).
pub fn request(session: u64, req: DeviceRequest) -> Result<DeviceGrant, CudaError> {
    request_device(session, req).map(|(g, _)| g)
}

/// As [`request`], also returning the pool index of the first granted
/// device (the driver ordinal the cuda backend opens).
///
/// # Errors
/// As [`request`].
pub fn request_device(session: u64, req: DeviceRequest) -> Result<(DeviceGrant, u32), CudaError> {
    let msg = WorkerMsg::Admit {
        count: req.count,
        fraction_milli: req.fraction_milli,
        memory_bytes: req.memory_bytes,
    };
    let line = serde_json::to_string(&msg).map_err(|e| channel(session, &e))?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|e| channel(session, &e))?;
    }
    let stdin = std::io::stdin();
    let timeout = rustix::event::Timespec {
        tv_sec: i64::try_from(ADMIT_TIMEOUT_MS / 1000).unwrap_or(i64::MAX),
        tv_nsec: i64::try_from((ADMIT_TIMEOUT_MS % 1000) * 1_000_000).unwrap_or(0),
    };
    let fd = stdin.as_fd();
    let mut fds = [rustix::event::PollFd::from_borrowed_fd(
        fd,
        rustix::event::PollFlags::IN,
    )];
    loop {
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(0) => return Err(channel(session, &"no admission answer in time")),
            Ok(_) => break,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(channel(session, &e)),
        }
    }
    // The daemon writes the whole answer line at once (far below PIPE_BUF).
    let mut answer = String::new();
    stdin
        .lock()
        .take(ANSWER_BYTES_MAX)
        .read_line(&mut answer)
        .map_err(|e| channel(session, &e))?;
    match serde_json::from_str::<Admission>(answer.trim()) {
        Ok(Admission::Granted {
            count,
            bytes,
            device,
        }) => {
            tracing::info!(
                session,
                count,
                bytes,
                "rgpu worker: client admitted; creating its backend"
            );
            Ok((
                DeviceGrant {
                    count,
                    memory_bytes: bytes,
                },
                device,
            ))
        }
        Ok(Admission::Refused { reason, invalid }) => {
            tracing::warn!(session, %reason, "rgpu worker: device request refused");
            Err(if invalid {
                CudaError::INVALID_VALUE
            } else {
                CudaError::OUT_OF_MEMORY
            })
        }
        Err(e) => Err(channel(session, &e)),
    }
}

fn channel(session: u64, e: &dyn std::fmt::Display) -> CudaError {
    tracing::error!(session, error = %e, "rgpu worker: admission channel to the daemon failed");
    CudaError::UNKNOWN
}
