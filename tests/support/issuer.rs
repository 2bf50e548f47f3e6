//! A tiny OpenID issuer for tests: discovery, a JWKS with a fresh RSA-2048 key, and RS256 ID tokens on demand.
//!
//! Include it by path from any integration test:
//! ```ignore
//! #[path = "support/issuer.rs"]
//! mod issuer;
//! let op = issuer::TestIssuer::start();
//! let id_token = op.id_token_for("alice@example.com", "pachd", Duration::from_secs(600));
//! ```
//! It serves plain HTTP/1.1 on `127.0.0.1:<random>` from one thread (one request per connection), so it works
//! from sync and async tests alike, and stops when dropped. It has no login: tokens are minted directly.
//! The key is fresh per issuer, so tokens from one test never verify against another.

// Each test crate uses a different subset of this helper.
#![allow(dead_code)]
// Test support: a failure to set up the issuer should stop the test loudly.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

/// The `kid` of the issuer's published key (and of the foreign key, so only the signature differs).
pub const KID: &str = "test-key-1";

/// An RSA key with what is needed to sign (PKCS#1 DER) and to publish (JWK).
struct SigningKey {
    der: Vec<u8>,
    jwk: Value,
}

impl SigningKey {
    fn generate(kid: &str) -> Self {
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("generate an RSA-2048 key");
        let der = key.to_pkcs1_der().expect("encode the RSA key as PKCS#1 DER").as_bytes().to_vec();
        let jwk = json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": kid,
            "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
        });
        Self { der, jwk }
    }

    fn sign(&self, kid: &str, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &jsonwebtoken::EncodingKey::from_rsa_der(&self.der)).expect("sign a JWT")
    }
}

/// How to start a [`TestIssuer`]; [`TestIssuer::start`] uses the defaults.
#[derive(Debug, Default, Clone)]
pub struct TestIssuerBuilder {
    path: String,
    trailing_slash: bool,
    advertised_issuer: Option<String>,
    clock_offset: Option<i64>,
}

impl TestIssuerBuilder {
    /// Serve under a path, like Dex behind pachd's proxy (`http://host:port/dex`).
    pub fn path(mut self, path: &str) -> Self {
        self.path = format!("/{}", path.trim_matches('/'));
        self
    }

    /// Make the issuer URL end in `/` (discovery still lives at `<issuer without slash>/.well-known/…`).
    pub fn trailing_slash(mut self, yes: bool) -> Self {
        self.trailing_slash = yes;
        self
    }

    /// Put another `issuer` in the discovery document than the issuer's own URL (a misconfigured provider).
    pub fn advertised_issuer(mut self, issuer: &str) -> Self {
        self.advertised_issuer = Some(issuer.to_owned());
        self
    }

    /// Send an HTTP `Date` header this many seconds off the real time (by default none is sent): a provider
    /// whose clock, or this machine's, is wrong.
    pub fn clock_offset(mut self, seconds: i64) -> Self {
        self.clock_offset = Some(seconds);
        self
    }

    /// Generates the key, binds `127.0.0.1:0` and starts serving.
    pub fn start(self) -> TestIssuer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the test issuer");
        let addr = listener.local_addr().expect("test issuer address");
        let base = format!("http://{addr}{}", self.path);
        let issuer = if self.trailing_slash { format!("{base}/") } else { base.clone() };
        let key = SigningKey::generate(KID);
        let routes = Routes {
            discovery_path: format!("{}/.well-known/openid-configuration", self.path),
            jwks_path: format!("{}/jwks", self.path),
            discovery: discovery_document(&self.advertised_issuer.clone().unwrap_or_else(|| issuer.clone()), &base)
                .to_string(),
            jwks: json!({ "keys": [key.jwk.clone()] }).to_string(),
            clock_offset: self.clock_offset,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let jwks_fetches = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, jwks_fetches) = (Arc::clone(&stop), Arc::clone(&jwks_fetches));
            std::thread::Builder::new()
                .name("test-issuer".into())
                .spawn(move || serve(&listener, &routes, &stop, &jwks_fetches))
                .expect("start the test issuer thread")
        };
        TestIssuer {
            issuer,
            addr: addr.to_string(),
            key,
            foreign_key: OnceLock::new(),
            stop,
            jwks_fetches,
            thread: Some(thread),
        }
    }
}

/// A running test issuer. Dropping it stops the server.
pub struct TestIssuer {
    issuer: String,
    addr: String,
    key: SigningKey,
    /// A key the JWKS never publishes, made on first use (RSA generation is the slow part).
    foreign_key: OnceLock<SigningKey>,
    stop: Arc<AtomicBool>,
    jwks_fetches: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl TestIssuer {
    /// An issuer at `http://127.0.0.1:<port>` (no trailing slash, no path).
    pub fn start() -> TestIssuer {
        TestIssuer::builder().start()
    }

    /// An issuer at `http://127.0.0.1:<port>/`: the same server, but `iss` and discovery say it with a slash.
    pub fn start_with_trailing_slash() -> TestIssuer {
        TestIssuer::builder().trailing_slash(true).start()
    }

    /// Options: path, trailing slash, advertised issuer.
    pub fn builder() -> TestIssuerBuilder {
        TestIssuerBuilder::default()
    }

    /// The issuer URL exactly as it appears in discovery and in minted tokens' `iss`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// `host:port` the issuer listens on.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// How many times the JWKS has been fetched (a verifier refetches when a key is unknown).
    pub fn jwks_fetches(&self) -> usize {
        self.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Signs `claims` (as given, nothing added) with the published key: RS256, `kid` = [`KID`].
    pub fn mint(&self, claims: Value) -> String {
        self.key.sign(KID, &claims)
    }

    /// Signs `claims` with a key the JWKS does not contain but under the published `kid`: a bad signature.
    pub fn mint_with_foreign_key(&self, claims: Value) -> String {
        self.foreign_key.get_or_init(|| SigningKey::generate(KID)).sign(KID, &claims)
    }

    /// Typical ID-token claims from this issuer: `iss`, `sub`, `aud`, `email`, `email_verified`, `iat`, `exp`.
    /// Change fields before [`TestIssuer::mint`] to build a broken token.
    pub fn claims_for(&self, email: &str, aud: &str, ttl: Duration) -> Value {
        let now = unix_now();
        json!({
            "iss": self.issuer,
            "sub": format!("sub-{email}"),
            "aud": aud,
            "email": email,
            "email_verified": true,
            "iat": now,
            "exp": now + ttl.as_secs(),
        })
    }

    /// A valid ID token for `email`, audience `aud`, expiring `ttl` from now.
    pub fn id_token_for(&self, email: &str, aud: &str, ttl: Duration) -> String {
        self.mint(self.claims_for(email, aud, ttl))
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect(&self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs()
}

struct Routes {
    discovery_path: String,
    jwks_path: String,
    discovery: String,
    jwks: String,
    clock_offset: Option<i64>,
}

fn serve(listener: &TcpListener, routes: &Routes, stop: &AtomicBool, jwks_fetches: &AtomicUsize) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        if let Ok(mut conn) = conn {
            // A client that stalls must not wedge the issuer for the rest of the test run.
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = answer(&mut conn, routes, jwks_fetches);
        }
    }
}

fn answer(conn: &mut TcpStream, routes: &Routes, jwks_fetches: &AtomicUsize) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 64 * 1024 {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let request = String::from_utf8_lossy(&request);
    let mut first_line = request.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (first_line.next().unwrap_or_default(), first_line.next().unwrap_or_default());
    let path = target.split('?').next().unwrap_or_default();
    let (status, body) = match (method, path) {
        ("GET", p) if p == routes.discovery_path => ("200 OK", routes.discovery.as_str()),
        ("GET", p) if p == routes.jwks_path => {
            jwks_fetches.fetch_add(1, Ordering::SeqCst);
            ("200 OK", routes.jwks.as_str())
        }
        _ => ("404 Not Found", r#"{"error":"not found"}"#),
    };
    // IMF-fixdate (RFC 9110), the only form servers send.
    let date = routes.clock_offset.map_or_else(String::new, |offset| {
        let at = chrono::Utc::now() + chrono::TimeDelta::seconds(offset);
        format!("Date: {}\r\n", at.format("%a, %d %b %Y %H:%M:%S GMT"))
    });
    write!(
        conn,
        "HTTP/1.1 {status}\r\n{date}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

/// A minimal discovery document for `issuer` whose endpoints (`/auth`, `/token`, `/jwks`) live under `base`.
pub fn discovery_document(issuer: &str, base: &str) -> Value {
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{base}/auth"),
        "token_endpoint": format!("{base}/token"),
        "jwks_uri": format!("{base}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    })
}
