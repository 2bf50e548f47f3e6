//! The dev IdP's signing key: a fresh RSA-2048 key per process, published as a JWK, signing ID tokens RS256.
//!
//! A fresh key per start means an ID token from an earlier run never verifies against a later one, exactly what a
//! developer restarting the stack should see. The private key leaves this module only inside jsonwebtoken's
//! `EncodingKey`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::rand_core::OsRng;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The modulus size: 2048 bits is what Dex and oidc-provider generate, and it keeps start-up well under a second.
const RSA_BITS: usize = 2048;

/// Why no signing key could be made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// RSA generation failed (no randomness).
    #[error("failed to generate an RSA key: {0}")]
    Generate(#[from] rsa::Error),
    /// The key could not be encoded for the signer.
    #[error("failed to encode the RSA key: {0}")]
    Encode(#[from] rsa::pkcs1::Error),
}

/// A signing key and its public half as a JWK.
pub(crate) struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a key. CPU-bound (tens to hundreds of milliseconds): call it off the async workers.
    ///
    /// # Errors
    /// [`KeyError`] when the system has no randomness.
    pub(crate) fn generate() -> Result<Self, KeyError> {
        let key = rsa::RsaPrivateKey::new(&mut OsRng, RSA_BITS)?;
        let der = key.to_pkcs1_der()?;
        let n = URL_SAFE_NO_PAD.encode(key.n().to_bytes_be());
        let e = URL_SAFE_NO_PAD.encode(key.e().to_bytes_be());
        // RFC 7638 thumbprint: a kid that names the key itself, so two runs never share one.
        let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
        let jwk = json!({ "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": n, "e": e });
        Ok(Self { kid, encoding: EncodingKey::from_rsa_der(der.as_bytes()), jwk })
    }

    /// The JWK Set document served at the JWKS endpoint.
    pub(crate) fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk.clone()] })
    }

    /// Signs `claims` as a compact JWS: RS256, `typ: JWT`, this key's `kid`.
    ///
    /// # Errors
    /// When the signer fails, which for a well-formed key means the claims did not serialize.
    pub(crate) fn sign(&self, claims: &Value) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
    }
}
