//! Deciding whether io_uring is usable, and naming the cause when it is not.
//!
//! Exists because io_uring is often switched off (the `kernel.io_uring_disabled`
//! sysctl, seccomp in containers); a bare `EPERM` would leave operators guessing.

use std::io;

use crate::error::{TransportError, UringUnavailableCause};

/// Where the kernel exposes the io_uring switch.
pub const IO_URING_DISABLED_SYSCTL: &str = "/proc/sys/kernel/io_uring_disabled";

/// Reads `kernel.io_uring_disabled`; `None` if absent (older kernels) or unreadable.
pub fn read_sysctl() -> Option<u32> {
    let text = std::fs::read_to_string(IO_URING_DISABLED_SYSCTL).ok()?;
    text.trim().parse().ok()
}

/// Refuses early when the sysctl says io_uring is off for everybody.
pub(crate) fn precheck(sysctl: Option<u32>) -> Result<(), TransportError> {
    match sysctl {
        Some(value) if value >= 2 => Err(TransportError::UringUnavailable {
            cause: UringUnavailableCause::DisabledBySysctl { value },
        }),
        _ => Ok(()),
    }
}

/// Maps an `io_uring_setup` failure to a typed error naming its cause.
///
/// `sysctl` is the value of `kernel.io_uring_disabled` at the time of failure.
pub fn classify_setup_error(err: io::Error, sysctl: Option<u32>) -> TransportError {
    let cause = match (err.raw_os_error(), sysctl) {
        (Some(libc::EPERM), Some(value)) if value >= 1 => {
            UringUnavailableCause::DisabledBySysctl { value }
        }
        (Some(libc::EPERM), _) => UringUnavailableCause::PermissionDenied { sysctl },
        (Some(libc::ENOSYS), _) => UringUnavailableCause::NotImplemented { sysctl },
        _ => return TransportError::io("io_uring_setup", err),
    };
    TransportError::UringUnavailable { cause }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errno(e: i32) -> io::Error {
        io::Error::from_raw_os_error(e)
    }

    #[test]
    fn eperm_with_sysctl_set_names_the_sysctl() {
        let err = classify_setup_error(errno(libc::EPERM), Some(1));
        assert!(matches!(
            err,
            TransportError::UringUnavailable {
                cause: UringUnavailableCause::DisabledBySysctl { value: 1 }
            }
        ));
        assert!(err.to_string().contains("io_uring_disabled = 1"), "{err}");
    }

    #[test]
    fn eperm_with_sysctl_clear_is_a_policy_denial() {
        let err = classify_setup_error(errno(libc::EPERM), Some(0));
        assert!(matches!(
            err,
            TransportError::UringUnavailable {
                cause: UringUnavailableCause::PermissionDenied { sysctl: Some(0) }
            }
        ));
        assert!(err.to_string().contains("EPERM"), "{err}");
    }

    #[test]
    fn enosys_is_not_implemented_and_reports_sysctl() {
        let err = classify_setup_error(errno(libc::ENOSYS), None);
        assert!(matches!(
            err,
            TransportError::UringUnavailable {
                cause: UringUnavailableCause::NotImplemented { sysctl: None }
            }
        ));
        assert!(err.to_string().contains("unreadable"), "{err}");
    }

    #[test]
    fn other_errors_stay_io_errors() {
        let err = classify_setup_error(errno(libc::ENOMEM), Some(0));
        assert!(matches!(
            err,
            TransportError::Io {
                op: "io_uring_setup",
                ..
            }
        ));
    }

    #[test]
    fn precheck_refuses_value_two_only() {
        assert!(precheck(None).is_ok());
        assert!(precheck(Some(0)).is_ok());
        assert!(precheck(Some(1)).is_ok());
        let err = precheck(Some(2)).unwrap_err();
        assert!(err.to_string().contains("io_uring_disabled = 2"), "{err}");
    }

    #[test]
    fn sysctl_reads_a_small_number_when_present() {
        if let Some(v) = read_sysctl() {
            assert!(v <= 2, "unexpected sysctl value {v}");
        }
        assert!(precheck(read_sysctl()).is_ok() || read_sysctl() == Some(2));
    }
}
