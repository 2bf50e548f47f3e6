//! Unguessable values for the dev stack: OAuth codes, refresh tokens, device codes, client secrets, pachd's OIDC
//! state and nonce, and user codes people type.
//!
//! Everything comes from the operating system's CSPRNG. A dev server is still reachable by every local user and by
//! any page the browser loads, so its codes must be as hard to guess as a real server's.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::rand_core::{OsRng, RngCore};

/// Bytes behind an OAuth code, refresh token, device code or generated client secret: 256 bits, like the
/// random values of oidc-provider and Dex.
const TOKEN_BYTES: usize = 32;

/// pachd's `random.String(30)` draws 23 bytes, which base64url (no padding) writes as 31 characters.
const PACHD_STRING_BYTES: usize = 23;

/// The user-code alphabet of RFC 8628 §6.1: consonants only, so no word can be spelled and no letter is read as a
/// digit. Twenty letters, eight of them: about 34.6 bits, with the device code's short lifetime and the polling
/// rate limit this is what the RFC considers enough.
const USER_CODE_ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";

/// `n` random bytes written as base64url without padding.
pub(crate) fn b64url(n: usize) -> String {
    let mut buf = vec![0u8; n];
    OsRng.fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(&buf)
}

/// A 256-bit opaque token (43 characters, base64url).
pub(crate) fn token() -> String {
    b64url(TOKEN_BYTES)
}

/// A value shaped like pachd's OIDC `state` and `nonce`: 31 base64url characters from 23 random bytes.
pub(crate) fn pachd_string() -> String {
    b64url(PACHD_STRING_BYTES)
}

/// A user code such as `WDJB-MJHT`: eight letters of [`USER_CODE_ALPHABET`] with a dash in the middle.
pub(crate) fn user_code() -> String {
    let mut letters = String::with_capacity(9);
    let mut byte = [0u8; 1];
    while letters.len() < 9 {
        if letters.len() == 4 {
            letters.push('-');
            continue;
        }
        OsRng.fill_bytes(&mut byte);
        // Rejection sampling keeps every letter equally likely: 240 is the largest multiple of 20 below 256.
        if byte[0] < 240 {
            letters.push(char::from(USER_CODE_ALPHABET[usize::from(byte[0] % 20)]));
        }
    }
    letters
}

/// Brings a typed user code to its canonical form: upper case, dash and spaces ignored, `None` when it cannot be
/// one of ours (RFC 8628 §6.1 asks servers to be lenient with what people type).
pub(crate) fn normalize_user_code(input: &str) -> Option<String> {
    let letters: String =
        input.chars().filter(|c| !matches!(c, '-' | ' ' | '\t')).map(|c| c.to_ascii_uppercase()).collect();
    if letters.len() != 8 || !letters.bytes().all(|b| USER_CODE_ALPHABET.contains(&b)) {
        return None;
    }
    Some(format!("{}-{}", &letters[..4], &letters[4..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pachd_strings_are_31_base64url_characters() {
        let s = pachd_string();
        assert_eq!(s.len(), 31, "{s}");
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{s}");
        assert_ne!(s, pachd_string());
    }

    #[test]
    fn tokens_carry_256_bits() {
        assert_eq!(token().len(), 43);
    }

    #[test]
    fn user_codes_look_like_rfc_8628_examples_and_normalize_back() {
        for _ in 0..50 {
            let code = user_code();
            assert_eq!(code.len(), 9, "{code}");
            assert_eq!(&code[4..5], "-");
            assert_eq!(normalize_user_code(&code.to_lowercase().replace('-', " ")).as_deref(), Some(code.as_str()));
        }
        assert_eq!(normalize_user_code("ABCD-EFGH"), None, "vowels are not in the alphabet");
        assert_eq!(normalize_user_code("BCDF-GHJ"), None);
    }
}
