//! Where the shim's GPU would come from, and why there is none yet.
//!
//! `RGPU_SERVER` names the server (`tcp://…`, `shm://…`, `rdma://…`). This slice of the shim
//! has no transport client, so every configuration ends in "no device"; the reason is kept
//! typed so the log line can say exactly why, once per process.

use std::sync::OnceLock;

/// The environment variable naming the GPU server.
pub const SERVER_ENV: &str = "RGPU_SERVER";

/// Why no remote GPU is available.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServerUnavailable {
    /// `RGPU_SERVER` is unset or empty.
    #[error("{SERVER_ENV} is not set, so there is no GPU server to use")]
    NotConfigured,
    /// A server is configured but this build cannot connect to servers yet.
    #[error("{SERVER_ENV}={url} is set, but this build of the shim cannot connect to servers yet (remote calls are not implemented)")]
    ClientNotImplemented {
        /// The configured server address.
        url: String,
    },
}

/// Decides server availability from the value of `RGPU_SERVER`.
pub fn availability(server_env: Option<&str>) -> Result<(), ServerUnavailable> {
    match server_env.map(str::trim) {
        None | Some("") => Err(ServerUnavailable::NotConfigured),
        Some(url) => Err(ServerUnavailable::ClientNotImplemented {
            url: url.to_owned(),
        }),
    }
}

/// The process-wide answer, read from the environment once, with one log line when there is
/// no server.
pub fn current() -> &'static Result<(), ServerUnavailable> {
    static CURRENT: OnceLock<Result<(), ServerUnavailable>> = OnceLock::new();
    CURRENT.get_or_init(|| {
        let value = std::env::var(SERVER_ENV).ok();
        let result = availability(value.as_deref());
        if let Err(why) = &result {
            tracing::warn!("rgpu shim: reporting no CUDA devices: {why}");
        }
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_or_blank_is_not_configured() {
        assert_eq!(availability(None), Err(ServerUnavailable::NotConfigured));
        assert_eq!(
            availability(Some("  ")),
            Err(ServerUnavailable::NotConfigured)
        );
    }

    #[test]
    fn a_configured_server_is_reported_unreachable_with_its_url() {
        let err = availability(Some("tcp://10.0.0.1:7000")).unwrap_err();
        assert!(err.to_string().contains("tcp://10.0.0.1:7000"), "{err}");
    }
}
