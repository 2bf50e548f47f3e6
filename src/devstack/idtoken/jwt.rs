//! The JWT's wire format as go-oidc and go-jose read it: base64url parts, the JOSE header, the signature.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use super::VerifyError;

/// go-oidc `parseJWT`: only the payload is needed before the claim checks.
pub(super) fn jwt_payload(raw: &str) -> Result<Vec<u8>, VerifyError> {
    let parts: Vec<&str> = raw.split('.').collect();
    if parts.len() < 2 {
        return Err(VerifyError::Malformed(format!("oidc: malformed jwt, expected 3 parts got {}", parts.len())));
    }
    b64url_decode(parts[1]).map_err(|e| VerifyError::Malformed(format!("oidc: malformed jwt payload: {e}")))
}

/// The compact JWS, parsed only after the claims passed (go-jose `ParseSigned`).
pub(super) struct SignedJwt<'a> {
    signing_input: &'a str,
    signature: &'a str,
    alg: String,
    pub(super) kid: Option<String>,
}

impl<'a> SignedJwt<'a> {
    pub(super) fn parse(raw: &'a str) -> Result<Self, VerifyError> {
        let malformed = |m: &str| VerifyError::Malformed(format!("square/go-jose: {m}"));
        let (signing_input, signature) =
            raw.rsplit_once('.').ok_or_else(|| malformed("compact JWS format must have three parts"))?;
        let Some((header_b64, _)) = signing_input.split_once('.').filter(|(_, p)| !p.contains('.')) else {
            return Err(malformed("compact JWS format must have three parts"));
        };
        let header = b64url_decode(header_b64).map_err(|e| malformed(&e))?;
        let header: Value = serde_json::from_slice(&header).map_err(|e| malformed(&e.to_string()))?;
        b64url_decode(signature).map_err(|e| malformed(&e))?;
        let alg = header.get("alg").and_then(Value::as_str).unwrap_or_default().to_owned();
        let kid = header.get("kid").and_then(Value::as_str).filter(|k| !k.is_empty()).map(str::to_owned);
        Ok(Self { signing_input, signature, alg, kid })
    }

    /// The header's algorithm if the provider allows it (RS256 when discovery lists none we support).
    pub(super) fn algorithm(&self, allowed: &[String]) -> Result<Algorithm, VerifyError> {
        let allowed = if allowed.is_empty() { vec!["RS256".to_owned()] } else { allowed.to_vec() };
        if !allowed.contains(&self.alg) {
            return Err(VerifyError::UnsupportedAlgorithm { expected: allowed, got: self.alg.clone() });
        }
        // ES512 is advertised-but-unverifiable here (jsonwebtoken lacks it): it fails as a bad signature.
        self.alg.parse::<Algorithm>().map_err(|_| VerifyError::BadSignature)
    }

    /// Whether any key with the token's `kid` (any key, when the token names none) verifies the signature.
    pub(super) fn verifies_with(&self, keys: &[Jwk], alg: Algorithm) -> bool {
        keys.iter()
            .filter(|k| self.kid.is_none() || k.common.key_id == self.kid)
            .filter(|k| key_fits(k, alg))
            .filter_map(|k| DecodingKey::from_jwk(k).ok())
            .any(|key| {
                jsonwebtoken::crypto::verify(self.signature, self.signing_input.as_bytes(), &key, alg).unwrap_or(false)
            })
    }
}

/// Whether a JWK can verify `alg`; go-jose refuses mismatched key types, and jsonwebtoken must never be handed one.
fn key_fits(jwk: &Jwk, alg: Algorithm) -> bool {
    use Algorithm::{ES256, ES384, EdDSA, PS256, PS384, PS512, RS256, RS384, RS512};
    match (&jwk.algorithm, alg) {
        (AlgorithmParameters::RSA(_), RS256 | RS384 | RS512 | PS256 | PS384 | PS512) => true,
        (AlgorithmParameters::EllipticCurve(p), ES256) => p.curve == EllipticCurve::P256,
        (AlgorithmParameters::EllipticCurve(p), ES384) => p.curve == EllipticCurve::P384,
        (AlgorithmParameters::OctetKeyPair(p), EdDSA) => p.curve == EllipticCurve::Ed25519,
        _ => false,
    }
}

/// Go's `base64.RawURLEncoding.DecodeString`: URL alphabet, no padding, Go's error text.
pub(super) fn b64url_decode(input: &str) -> Result<Vec<u8>, String> {
    let illegal = |at: usize| format!("illegal base64 data at input byte {at}");
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for (i, byte) in input.bytes().enumerate() {
        let sextet = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return Err(illegal(i)),
        };
        acc = (acc << 6) | u32::from(sextet);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if input.len() % 4 == 1 {
        return Err(illegal(input.len() - 1));
    }
    Ok(out)
}
