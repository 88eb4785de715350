//! The worker ↔ daemon channel: JSON lines over the worker's stdin/stdout
//! pipes, and the worker's exit codes. Exists so both sides share one
//! format. The worker asks for admission when its client's first call
//! arrives (so after auth; an unauthenticated client never reaches the
//! pool), and sends its session counters once, at exit. Live usage while
//! the session runs does not use this channel: the worker counts it in its
//! share-board slot, which the daemon reads (`state::ClientUsage`).

use serde::{Deserialize, Serialize};

/// Largest amount read from one worker's stdout over its life, in bytes.
pub const REPORT_BYTES_MAX: u64 = 64 << 10;
/// Largest admission answer a worker reads, in bytes.
pub const ANSWER_BYTES_MAX: u64 = 4 << 10;
/// Bound on the worker's wait for the daemon's admission answer, in ms.
pub const ADMIT_TIMEOUT_MS: u64 = 5_000;

/// Exit code: the session ended normally.
pub const EXIT_OK: i32 = 0;
/// Exit code: the worker failed (transport set-up, session error).
pub const EXIT_FAILED: i32 = 1;
/// Exit code: the client did not prove the token (or the handshake timed out).
pub const EXIT_AUTH_FAILED: i32 = 10;

/// A line from the worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerMsg {
    /// The client is authenticated and asks for devices (its
    /// `RequestDevices`, or the server default on its first other call).
    Admit {
        /// Devices wanted.
        count: u32,
        /// Share of each device in thousandths (when `memory_bytes` is 0).
        fraction_milli: u32,
        /// Memory per device in bytes (0: `fraction_milli`, or both 0: the
        /// server's default share).
        memory_bytes: u64,
    },
    /// The session ended; its counters.
    Report(WorkerReport),
}

/// The daemon's answer to [`WorkerMsg::Admit`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Admission {
    /// Admitted: the backend's quota.
    Granted {
        /// Devices granted.
        count: u32,
        /// Memory granted per device, in bytes.
        bytes: u64,
        /// Pool index (the driver ordinal under cuda) of the first device.
        #[serde(default)]
        device: u32,
    },
    /// Refused: the request does not fit (`CUDA_ERROR_OUT_OF_MEMORY`) or is
    /// malformed (`CUDA_ERROR_INVALID_VALUE`).
    Refused {
        /// Why, in words (logged by the worker).
        reason: String,
        /// The request itself was invalid.
        invalid: bool,
    },
}

/// A worker's final report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerReport {
    /// Whether the client failed the token check or the handshake deadline.
    pub auth_failed: bool,
    /// Whether the connection ended on a protocol violation by the client
    /// (malformed frames, credit or sequence violations).
    pub protocol_error: bool,
    /// Whether a GPU backend (context) was ever created.
    pub backend_created: bool,
    /// Why the connection closed, in words.
    pub close_reason: String,
    /// Sync calls answered.
    pub sync_calls: u64,
    /// Async calls executed.
    pub async_calls: u64,
    /// Calls that failed (sync and async).
    pub failed_calls: u64,
    /// Host-to-device bytes.
    pub bytes_h2d: u64,
    /// Device-to-host bytes.
    pub bytes_d2h: u64,
    /// Device bytes still allocated at the end and freed by teardown.
    pub released_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        for m in [
            WorkerMsg::Admit {
                count: 1,
                fraction_milli: 250,
                memory_bytes: 0,
            },
            WorkerMsg::Report(WorkerReport {
                sync_calls: 3,
                ..WorkerReport::default()
            }),
        ] {
            let line = serde_json::to_string(&m).unwrap();
            assert!(!line.contains('\n'));
            assert_eq!(serde_json::from_str::<WorkerMsg>(&line).unwrap(), m);
        }
        let a = Admission::Granted {
            count: 1,
            bytes: 5,
            device: 0,
        };
        let line = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Admission>(&line).unwrap(), a);
        assert!(serde_json::from_str::<Admission>("{\"type\":\"granted\"}").is_err());
    }
}
