//! A real OpenID Provider for login tests: `node tests/oidc/server.js` (npm `oidc-provider`, with login and
//! consent pages, PKCE, refresh-token rotation, the device flow and revocation).
//!
//! ```ignore
//! mod support; // or: #[path = "support/op.rs"] mod op;
//! let op = support::op::TestOp::start();                      // issuer http://127.0.0.1:<random>
//! let op = support::op::TestOp::builder().trailing_slash().id_token_ttl(Duration::from_secs(5)).start();
//! op.stats()["refresh_token"];  // grants counted by the provider itself
//! op.revoke_grants("alice@example.com");  // every refresh token of alice now gets invalid_grant
//! op.set_down(true);            // every OIDC endpoint answers 503
//! op.forge_next_id_token(&Forgery::new().remove("email").signed(Signing::Stranger)); // the next ID token is bad
//! op.rotate_keys();             // a new signing key (and kid) from now on; /jwks lists it
//! ```
//! The default clients are [`PUBLIC_CLIENT`], [`CONFIDENTIAL_CLIENT`], [`EXACT_CLIENT`] and [`PACHD_CLIENT`]; any
//! login name with any password is accepted, the login name becomes `sub`, and `email` is the login name when it
//! contains `@` (else `<login>@example.com`). Refresh tokens need scope `offline_access` and `prompt=consent`.
//!
//! [`FAKE_USER`] is the scripted user at a browser (`tests/browser/fake_user.py`), usable as `$BROWSER`.
//!
//! Blocking std I/O only (the provider is a separate process), so every method works from plain `#[test]`s and
//! from `#[tokio::test]`s alike. The provider dies with the `TestOp` (and with the test process: it exits when its
//! stdin pipe closes).

// Each test crate uses a different subset of this helper.
#![allow(dead_code)]
// Test support: a failure to set up the provider should stop the test loudly.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Public native client (no secret, PKCE): redirect URIs `http://127.0.0.1/callback` and
/// `http://localhost/callback`, any port. Grants: authorization_code, refresh_token, device_code.
pub const PUBLIC_CLIENT: &str = "pachagent";
/// Confidential native client (`client_secret_basic`), otherwise like [`PUBLIC_CLIENT`].
pub const CONFIDENTIAL_CLIENT: &str = "pachagent-confidential";
/// The secret of [`CONFIDENTIAL_CLIENT`].
pub const CONFIDENTIAL_SECRET: &str = "confidential-secret";
/// Public web client whose only redirect URI is [`EXACT_REDIRECT_URI`], port included (as Auth0 does it).
pub const EXACT_CLIENT: &str = "pachagent-exact";
/// The one redirect URI [`EXACT_CLIENT`] may use.
pub const EXACT_REDIRECT_URI: &str = "http://127.0.0.1:47651/callback";
/// pachd's own confidential native client: redirect URIs `http://127.0.0.1/authorization-code/callback` and
/// `http://localhost/authorization-code/callback`, any port.
pub const PACHD_CLIENT: &str = "pachd";
/// The secret of [`PACHD_CLIENT`].
pub const PACHD_SECRET: &str = "pachd-secret";
/// The scripted user at a browser; see the top of the script for its environment variables.
pub const FAKE_USER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/fake_user.py");

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// Panics, saying what to run, unless node and the installed npm package are there. Never skips a test.
fn check_prerequisites() {
    let node = Command::new("node").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    if !matches!(node, Ok(s) if s.success()) {
        panic!(
            "the test OpenID Provider needs `node` (Node.js 20 or later) on PATH: install it, then run \
             scripts/test.sh (it also runs `npm ci` in tests/oidc)"
        );
    }
    let package = oidc_dir().join("node_modules/oidc-provider/package.json");
    if !package.is_file() {
        panic!(
            "{} is missing: run scripts/test.sh (it runs `npm ci --no-audit --no-fund` in tests/oidc), or run \
             that npm command in tests/oidc yourself",
            package.display()
        );
    }
}

/// Options of a [`TestOp`]; see [`TestOp::builder`].
#[derive(Debug, Default, Clone)]
pub struct TestOpBuilder {
    trailing_slash: bool,
    port: Option<u16>,
    id_token_ttl: Option<Duration>,
    access_token_ttl: Option<Duration>,
    refresh_token_ttl: Option<Duration>,
    clients_file: Option<PathBuf>,
    clients: Option<serde_json::Value>,
}

impl TestOpBuilder {
    /// Issuer `http://127.0.0.1:PORT/` (with the slash, as Auth0 spells it) instead of `http://127.0.0.1:PORT`.
    pub fn trailing_slash(mut self) -> Self {
        self.trailing_slash = true;
        self
    }

    /// Listen on this port (e.g. to restart a provider where a client expects it) instead of a random one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// ID token lifetime (default 300 s). Whole seconds, at least 1.
    pub fn id_token_ttl(mut self, ttl: Duration) -> Self {
        self.id_token_ttl = Some(ttl);
        self
    }

    /// Access token lifetime (default 3600 s). Whole seconds, at least 1.
    pub fn access_token_ttl(mut self, ttl: Duration) -> Self {
        self.access_token_ttl = Some(ttl);
        self
    }

    /// Refresh token lifetime (default 14 days). Whole seconds, at least 1.
    pub fn refresh_token_ttl(mut self, ttl: Duration) -> Self {
        self.refresh_token_ttl = Some(ttl);
        self
    }

    /// Register the clients in this JSON file (an array of client metadata) instead of the default ones.
    pub fn clients_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.clients_file = Some(path.into());
        self
    }

    /// Register these clients (a JSON array of client metadata) instead of the default ones.
    pub fn clients(mut self, clients: serde_json::Value) -> Self {
        assert!(clients.is_array(), "TestOpBuilder::clients wants a JSON array, got {clients}");
        self.clients = Some(clients);
        self
    }

    /// Starts the provider and waits until it listens.
    pub fn start(self) -> TestOp {
        check_prerequisites();
        let dir = tempfile::tempdir().expect("temporary directory for the test OP");
        let mut cmd = Command::new("node");
        cmd.arg(oidc_dir().join("server.js")).arg("--die-with-stdin");
        cmd.arg("--port").arg(self.port.unwrap_or(0).to_string());
        if self.trailing_slash {
            cmd.arg("--trailing-slash");
        }
        for (flag, ttl) in [
            ("--id-token-ttl", self.id_token_ttl),
            ("--access-token-ttl", self.access_token_ttl),
            ("--refresh-token-ttl", self.refresh_token_ttl),
        ] {
            if let Some(ttl) = ttl {
                assert!(ttl.as_secs() >= 1, "{flag} must be at least one second, got {ttl:?}");
                cmd.arg(flag).arg(ttl.as_secs().to_string());
            }
        }
        if let Some(clients) = &self.clients {
            let path = dir.path().join("clients.json");
            std::fs::write(&path, clients.to_string()).expect("write clients.json");
            cmd.arg("--clients").arg(path);
        } else if let Some(path) = &self.clients_file {
            cmd.arg("--clients").arg(path);
        }
        cmd.current_dir(oidc_dir()).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start node tests/oidc/server.js: {e}"));

        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let log_writer = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = log_writer.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });

        // The ready line, read on a thread so a hung start fails after a while instead of hanging the test.
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let read = reader.read_line(&mut line);
            let _ = tx.send(read.map(|_| line));
            // Keep draining: nothing else is expected on stdout, but a full pipe must never block the provider.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let line = match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(Ok(line)) if !line.trim().is_empty() => line,
            outcome => {
                let _ = child.kill();
                let status = child.wait().ok();
                // Give the stderr thread a moment to collect the last words.
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "the test OP did not start ({outcome:?}, exit {status:?}); its stderr:\n{}",
                    log.lock().unwrap_or_else(|e| e.into_inner())
                );
            }
        };
        let ready: serde_json::Value = serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("bad ready line from the test OP ({e}): {line:?}"));
        let issuer = ready["issuer"].as_str().expect("issuer in the ready line").to_owned();
        let port = ready["port"].as_u64().and_then(|p| u16::try_from(p).ok()).expect("port in the ready line");
        let stdin = child.stdin.take();
        TestOp { issuer, port, child, _stdin: stdin, log, _dir: dir }
    }
}

/// A running test OpenID Provider on `127.0.0.1`. Dropping it stops the provider.
pub struct TestOp {
    issuer: String,
    port: u16,
    child: Child,
    _stdin: Option<ChildStdin>,
    log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl TestOp {
    /// A provider with the defaults: random port, issuer without trailing slash, ID tokens for 300 s.
    pub fn start() -> Self {
        Self::builder().start()
    }

    /// Options: trailing slash, port, token lifetimes, clients.
    pub fn builder() -> TestOpBuilder {
        TestOpBuilder::default()
    }

    /// The issuer exactly as the provider spells it (`http://127.0.0.1:PORT` or `http://127.0.0.1:PORT/`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The port the provider listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` + `path` (which starts with `/`), whatever the issuer's trailing slash.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The discovery document URL (`<issuer without trailing slash>/.well-known/openid-configuration`).
    pub fn discovery_url(&self) -> String {
        self.url("/.well-known/openid-configuration")
    }

    /// Counts kept by the provider: `{"authorization_code":N,"refresh_token":N,"device_code":N,
    /// "errors":{"<grant type>":N},"authorizations":N,"jwks":N,"jwks_by_user_agent":{"<agent>":N},"forged":N,
    /// "down":bool}`. The first three count successful /token grants by grant type; `errors` counts failed ones
    /// (device-flow polls answered `authorization_pending` included); `authorizations` counts authorizations the
    /// user completed (codes sent to a redirect URI, and device-flow confirmations); `jwks` counts fetches of the
    /// key set, also by User-Agent; `forged` counts ID tokens replaced by [`TestOp::forge_next_id_token`].
    pub fn stats(&self) -> serde_json::Value {
        let (status, body) = self.http("GET", "/__test/stats");
        assert_eq!(status, 200, "GET /__test/stats: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET /__test/stats: {e}: {body}"))
    }

    /// Every secret that crossed the token endpoint so far, as (kind and number, value): authorization codes, PKCE
    /// verifiers, refresh tokens and device codes clients presented, and ID, access and refresh tokens issued.
    pub fn seen_secrets(&self) -> Vec<(String, String)> {
        let (status, body) = self.http("GET", "/__test/seen");
        assert_eq!(status, 200, "GET /__test/seen: {body}");
        let seen: std::collections::BTreeMap<String, Vec<String>> =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET /__test/seen: {e}: {body}"));
        seen.into_iter()
            .flat_map(|(kind, values)| {
                values.into_iter().enumerate().map(move |(i, v)| (format!("{kind} #{}", i + 1), v))
            })
            .collect()
    }

    /// Successful /token grants of one type so far: `authorization_code`, `refresh_token` or `device_code`.
    pub fn grants(&self, grant_type: &str) -> u64 {
        self.stats()[grant_type].as_u64().unwrap_or(0)
    }

    /// Revokes every grant of the account `sub` (the login name): its refresh and access tokens die, and
    /// refreshing then answers `invalid_grant`. Returns how many grants were revoked.
    pub fn revoke_grants(&self, sub: &str) -> u64 {
        let query: String = url::form_urlencoded::Serializer::new(String::new()).append_pair("sub", sub).finish();
        let (status, body) = self.http("POST", &format!("/__test/revoke-grants?{query}"));
        assert_eq!(status, 200, "POST /__test/revoke-grants: {body}");
        let answer: serde_json::Value = serde_json::from_str(&body).expect("JSON from /__test/revoke-grants");
        answer["revoked"].as_u64().expect("revoked count")
    }

    /// `true`: every OIDC endpoint (discovery, /auth, /token, ...) answers 503 `temporarily_unavailable`, as in
    /// a provider outage. `false`: back to normal. State (sessions, grants) survives.
    pub fn set_down(&self, down: bool) {
        let path = if down { "/__test/down" } else { "/__test/up" };
        let (status, body) = self.http("POST", path);
        assert_eq!(status, 200, "POST {path}: {body}");
    }

    /// Makes the next token-endpoint answer that carries an ID token (whatever the grant) carry a forged one
    /// instead: the genuine token's claims changed as `forgery` says, signed as it says. One answer only; a
    /// later call replaces a forgery still pending.
    pub fn forge_next_id_token(&self, forgery: &Forgery) {
        let (status, body) = self.http_with_body("POST", "/__test/forge", &forgery.to_json().to_string());
        assert_eq!(status, 200, "POST /__test/forge: {body}");
    }

    /// The provider signs ID tokens with a new key under a new kid from now on; its JWKS lists the new key
    /// first, and the old ones still. Returns the new kid.
    pub fn rotate_keys(&self) -> String {
        let (status, body) = self.http("POST", "/__test/rotate-keys");
        assert_eq!(status, 200, "POST /__test/rotate-keys: {body}");
        let answer: serde_json::Value = serde_json::from_str(&body).expect("JSON from /__test/rotate-keys");
        answer["kid"].as_str().expect("the new kid").to_owned()
    }

    /// How many times the provider's JWKS (`/jwks`) was fetched so far, by anyone.
    pub fn jwks_fetches(&self) -> u64 {
        self.stats()["jwks"].as_u64().expect("jwks count in /__test/stats")
    }

    /// How many times the provider's JWKS was fetched by clients whose User-Agent starts with `prefix` (the
    /// agent's is `pachagent/<version>`; pachd-dev fetches the same keys to check the tokens it is handed).
    pub fn jwks_fetches_by(&self, prefix: &str) -> u64 {
        let stats = self.stats();
        let by_agent = stats["jwks_by_user_agent"].as_object().expect("jwks_by_user_agent in /__test/stats");
        by_agent.iter().filter(|(agent, _)| agent.starts_with(prefix)).filter_map(|(_, n)| n.as_u64()).sum()
    }

    /// How many forged ID tokens the provider has handed out so far.
    pub fn forged(&self) -> u64 {
        self.stats()["forged"].as_u64().expect("forged count in /__test/stats")
    }

    /// What the provider wrote on stderr so far (warnings, errors), for failure messages.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// One HTTP/1.1 request without a body to the provider; returns status and body.
    fn http(&self, method: &str, path: &str) -> (u16, String) {
        self.http_with_body(method, path, "")
    }

    /// One HTTP/1.1 request with a (JSON) body to the provider; returns status and body.
    fn http_with_body(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        http_request(self.port, method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path} to the test OP failed: {e}\nOP stderr:\n{}", self.log()))
    }
}

/// How [`TestOp::forge_next_id_token`] signs the forged ID token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    /// The provider's current key and kid: a valid signature over the changed claims.
    Provider,
    /// Another RSA key, under the provider's kid: a signature that does not verify.
    Stranger,
    /// Another RSA key under a kid the provider's JWKS never lists.
    UnknownKid,
    /// `alg: none` and an empty signature.
    None,
    /// HS256 keyed with the provider's RSA public key (PEM): the key-confusion attack.
    Hs256WithPublicKey,
}

impl Signing {
    fn name(self) -> &'static str {
        match self {
            Signing::Provider => "provider",
            Signing::Stranger => "stranger",
            Signing::UnknownKid => "unknown-kid",
            Signing::None => "none",
            Signing::Hs256WithPublicKey => "hs256-public-key",
        }
    }
}

/// A change to the next ID token the provider hands out; see [`TestOp::forge_next_id_token`].
#[derive(Debug, Clone)]
pub struct Forgery {
    set: serde_json::Map<String, serde_json::Value>,
    remove: Vec<String>,
    signing: Signing,
}

impl Default for Forgery {
    fn default() -> Self {
        Self::new()
    }
}

impl Forgery {
    /// No change to the claims, signed with the provider's key.
    pub fn new() -> Self {
        Self { set: serde_json::Map::new(), remove: Vec::new(), signing: Signing::Provider }
    }

    /// Sets (or adds) a claim.
    pub fn set(mut self, claim: &str, value: impl Into<serde_json::Value>) -> Self {
        self.set.insert(claim.to_owned(), value.into());
        self
    }

    /// Removes a claim.
    pub fn remove(mut self, claim: &str) -> Self {
        self.remove.push(claim.to_owned());
        self
    }

    /// How to sign the result.
    pub fn signed(mut self, signing: Signing) -> Self {
        self.signing = signing;
        self
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "set": self.set, "remove": self.remove, "signing": self.signing.name() })
    }
}

impl Drop for TestOp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 client for the test endpoints (`Connection: close`, body read to EOF).
fn http_request(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    let content_type = if body.is_empty() { "" } else { "Content-Type: application/json\r\n" };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{content_type}Content-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no HTTP status in {head:?}")))?;
    // server.js always sends Content-Length (never chunked) on /__test/ answers.
    Ok((status, body.to_owned()))
}
