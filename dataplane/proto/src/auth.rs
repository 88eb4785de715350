//! Constant-time comparison of auth tokens.
//!
//! The server must not leak, through timing, how many leading bytes of a
//! guessed token were right. Tokens are fixed-size, so an xor-fold over all
//! bytes (no early exit) is enough; `black_box` keeps the optimizer from
//! turning the fold back into a short-circuiting compare.

use crate::control::TOKEN_BYTES;

/// Whether two tokens are equal, in time independent of their contents.
#[must_use]
pub fn tokens_equal(a: &[u8; TOKEN_BYTES], b: &[u8; TOKEN_BYTES]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    core::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::tokens_equal;

    #[test]
    fn equal_and_unequal() {
        let a = [7u8; 32];
        let mut b = a;
        assert!(tokens_equal(&a, &b));
        b[31] ^= 1;
        assert!(!tokens_equal(&a, &b));
        b = a;
        b[0] ^= 0x80;
        assert!(!tokens_equal(&a, &b));
    }
}
