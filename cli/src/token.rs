//! The client token: a file holding 64 hex digits (32 bytes). Exists so the
//! daemon (which checks the file at start) and the worker (which reads it
//! again, so the secret never appears on a command line) agree on one format.

use std::path::{Path, PathBuf};

use rgpu_proto::control::TOKEN_BYTES;

/// Largest token file read, in bytes (64 digits plus whitespace).
pub const TOKEN_FILE_BYTES_MAX: u64 = 4096;

/// Why the token could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The file could not be read.
    #[error("cannot read token file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The contents are not 64 hex digits.
    #[error("token file {path} must hold exactly {} hex digits", TOKEN_BYTES * 2)]
    Format {
        /// The file.
        path: PathBuf,
    },
}

/// Parses 64 hex digits (surrounding whitespace ignored).
pub fn parse_hex(text: &str) -> Option<[u8; TOKEN_BYTES]> {
    let t = text.trim().as_bytes();
    if t.len() != TOKEN_BYTES * 2 {
        return None;
    }
    let mut out = [0u8; TOKEN_BYTES];
    for (byte, pair) in out.iter_mut().zip(t.chunks_exact(2)) {
        let s = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// Loads the token from `path`; `None` gives the all-zero token.
///
/// # Errors
/// [`TokenError`].
pub fn load(path: Option<&Path>) -> Result<[u8; TOKEN_BYTES], TokenError> {
    use std::io::Read;
    let Some(path) = path else {
        return Ok([0; TOKEN_BYTES]);
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(TOKEN_FILE_BYTES_MAX).read_to_string(&mut text))
        .map_err(|source| TokenError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    parse_hex(&text).ok_or_else(|| TokenError::Format {
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_tokens() {
        let hex = "00ff10".repeat(10) + "abcd";
        let t = parse_hex(&format!("  {hex}\n")).unwrap();
        assert_eq!(&t[..4], &[0x00, 0xff, 0x10, 0x00]);
        assert_eq!(&t[30..], &[0xab, 0xcd]);
        assert!(parse_hex(&hex[1..]).is_none(), "63 digits");
        assert!(parse_hex(&(hex[2..].to_string() + "zz")).is_none());
        assert_eq!(load(None).unwrap(), [0; TOKEN_BYTES]);
        assert!(load(Some(Path::new("/nonexistent/rgpu-token"))).is_err());
    }
}
