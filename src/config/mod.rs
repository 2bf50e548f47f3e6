//! Configuration: named contexts (which pachd, which identity provider), the active context and the secret store.
//!
//! The file is TOML at `--config`, `$PACHAGENT_CONFIG`, or `$XDG_CONFIG_HOME/pachagent/config.toml`. It is read
//! into a raw struct that rejects unknown keys, then resolved once into [`Config`], with every default applied
//! here. Secrets never live in this file. This module reads and writes that one file and knows nothing else.
//!
//! Environment variables consulted (all listed here):
//! - `PACHAGENT_CONFIG`: the configuration file.
//! - `PACHAGENT_SOCKET`: the agent's socket.
//! - `XDG_CONFIG_HOME`, `HOME`: the default configuration directory.
//! - `XDG_RUNTIME_DIR`, `TMPDIR`: the default socket directory.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// pachd's gRPC port when an address names none (`pachctl`'s default, the Helm chart's `apiGRPCPort`).
pub const DEFAULT_PACHD_PORT: u16 = 30650;

/// The keyring service under which sessions are stored unless the config names another.
pub const DEFAULT_KEYRING_SERVICE: &str = "pachagent";

/// The only version of the file format this build writes and reads.
const CONFIG_VERSION: u32 = 1;

/// Which secret store holds the sessions (`store = "…"` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreChoice {
    /// Secret Service when a session bus offers it, else the kernel keyutils store (Linux); the platform store
    /// elsewhere.
    #[default]
    Auto,
    /// The freedesktop Secret Service (gnome-keyring, KWallet) over D-Bus.
    SecretService,
    /// The Linux kernel keyutils store, in the user keyring; lost at reboot.
    Keyutils,
    /// The macOS Keychain.
    Keychain,
    /// The Windows Credential Manager.
    CredentialManager,
}

/// How a context logs in when the user does not hand it a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// The agent runs the OIDC flow itself and trades the ID token with pachd; sessions can be refreshed.
    Oidc,
    /// The OIDC device authorization grant (RFC 8628): for hosts without a browser, e.g. over SSH.
    Device,
    /// pachctl's flow: pachd runs the OIDC exchange on its own callback; sessions cannot be refreshed.
    Pachd,
}

/// The host written in the loopback redirect URI. Providers compare it literally, so it must match what is
/// registered: `127.0.0.1` (RFC 8252's advice) or `localhost` (what some consoles insist on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub enum RedirectHost {
    /// `http://127.0.0.1:PORT/callback`.
    #[default]
    #[serde(rename = "127.0.0.1")]
    Loopback,
    /// `http://localhost:PORT/callback` (the listener binds 127.0.0.1 and [::1] on the same port).
    #[serde(rename = "localhost")]
    Localhost,
}

impl RedirectHost {
    /// The host as written in the URI.
    pub fn as_str(self) -> &'static str {
        match self {
            RedirectHost::Loopback => "127.0.0.1",
            RedirectHost::Localhost => "localhost",
        }
    }
}

impl Method {
    /// The name used in the config file and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Oidc => "oidc",
            Method::Device => "device",
            Method::Pachd => "pachd",
        }
    }
}

/// The file as written, before defaults. Unknown keys are errors so that typos do not silently do nothing.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    active_context: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    store: Option<StoreChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keyring_service: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    contexts: BTreeMap<String, RawContext>,
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawContext {
    pachd_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ca_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    issuer_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    issuer_ca_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    redirect_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    redirect_ports: Vec<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    redirect_host: Option<RedirectHost>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    method: Option<Method>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sync_pachctl: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_margin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expiry_warnings: Option<Vec<String>>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it was read from (and where `context` commands write).
    pub path: PathBuf,
    /// The context used when a request names none.
    pub active_context: Option<String>,
    /// The secret store.
    pub store: StoreChoice,
    /// The keyring service name sessions are stored under.
    pub keyring_service: String,
    /// Every context, by name.
    pub contexts: BTreeMap<String, Context>,
}

/// One Pachyderm cluster and how to log in to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// The context's name.
    pub name: String,
    /// Where pachd's gRPC API is.
    pub pachd: PachdAddress,
    /// PEM file with the CA that signs pachd's certificate (for `grpcs://` with a private CA).
    pub ca_file: Option<PathBuf>,
    /// The OIDC issuer, exactly as it appears in ID tokens' `iss`.
    pub issuer: Option<String>,
    /// Where discovery is fetched when the issuer's own host is not reachable from this machine (Dex inside a
    /// cluster); the provider's endpoints on the issuer's host are rewritten to this URL's host.
    pub issuer_url: Option<String>,
    /// PEM file with the CA that signs the provider's certificate.
    pub issuer_ca_file: Option<PathBuf>,
    /// The OAuth client id the agent logs in as.
    pub client_id: Option<String>,
    /// Scopes requested at login on top of `openid email profile offline_access`.
    pub scopes: Vec<String>,
    /// Loopback ports for the login redirect, tried in order (for providers that match redirect URIs exactly);
    /// empty means a random port.
    pub redirect_ports: Vec<u16>,
    /// The host written in the redirect URI.
    pub redirect_host: RedirectHost,
    /// How interactive logins run: `oidc` when an issuer is configured, else `pachd`, unless set.
    pub method: Method,
    /// Keep pachctl's own config file's `session_token` for this context in step with the agent.
    pub sync_pachctl: bool,
    /// A renewable session is refreshed no later than this long before it expires.
    pub refresh_margin: Duration,
    /// How long before a session that cannot be renewed ends the agent warns (EXPIRING_SOON events).
    pub expiry_warnings: Vec<Duration>,
}

/// The default [`Context::refresh_margin`]: long enough to ride out a short provider outage with retries.
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// The default [`Context::expiry_warnings`]: a day ahead, then an hour ahead.
pub const DEFAULT_EXPIRY_WARNINGS: [Duration; 2] = [Duration::from_secs(86_400), Duration::from_secs(3_600)];

/// Scopes every OIDC login asks for: an ID token with the email pachd makes the username from, and a refresh
/// token so the agent can renew the session without the user.
pub const BASE_SCOPES: [&str; 4] = ["openid", "email", "profile", "offline_access"];

impl Context {
    /// Every scope to request: [`BASE_SCOPES`] then the context's extra ones, without duplicates.
    pub fn all_scopes(&self) -> Vec<String> {
        let mut all: Vec<String> = BASE_SCOPES.iter().map(|s| (*s).to_owned()).collect();
        for s in &self.scopes {
            if !all.contains(s) {
                all.push(s.clone());
            }
        }
        all
    }
}

/// Settings for a new context (`pachagent context add`).
#[derive(Debug, Clone, Default)]
pub struct NewContext {
    /// pachd's address in any form pachctl accepts.
    pub pachd_address: String,
    /// CA file for `grpcs://`.
    pub ca_file: Option<PathBuf>,
    /// OIDC issuer.
    pub issuer: Option<String>,
    /// Discovery URL when it differs from the issuer.
    pub issuer_url: Option<String>,
    /// CA file for the provider.
    pub issuer_ca_file: Option<PathBuf>,
    /// OAuth client id.
    pub client_id: Option<String>,
    /// Extra scopes.
    pub scopes: Vec<String>,
    /// Fixed redirect ports, tried in order.
    pub redirect_ports: Vec<u16>,
    /// Host written in the redirect URI.
    pub redirect_host: Option<RedirectHost>,
    /// Login method.
    pub method: Option<Method>,
    /// Keep pachctl's config in step.
    pub sync_pachctl: bool,
}

/// A pachd address in pachctl's canonical form: `grpc://host:port` or `grpcs://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PachdAddress {
    /// Whether the connection uses TLS (`grpcs://` or `https://`).
    pub tls: bool,
    /// Host name or IP (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl PachdAddress {
    /// Parses an address the way pachctl does (`ParsePachdAddress`): schemes `grpc`, `grpcs`, `http`, `https`,
    /// none meaning `grpc`; port 30650 when absent; no path, user info, query or fragment.
    ///
    /// # Errors
    /// A message naming what is wrong with the address and the forms that are accepted.
    pub fn parse(input: &str) -> Result<Self, String> {
        let input = input.trim();
        if input.is_empty() {
            return Err("the pachd address is empty: use e.g. grpc://localhost:30650".into());
        }
        let (scheme, rest) = match input.split_once("://") {
            Some((s, r)) => (s.to_ascii_lowercase(), r),
            None => ("grpc".to_owned(), input),
        };
        let tls = match scheme.as_str() {
            "grpc" | "http" => false,
            "grpcs" | "https" => true,
            "unix" => {
                return Err(format!(
                    "pachd address {input:?}: unix sockets are not supported by pachagent; use grpc://host:port"
                ));
            }
            other => {
                return Err(format!(
                    "pachd address {input:?} has the unknown scheme {other:?}: use grpc://, grpcs://, http:// or https://"
                ));
            }
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(format!(
                "pachd address {input:?} must be only scheme, host and port (no path, user, query or fragment), e.g. grpcs://pachd.example.com:443"
            ));
        }
        let (host, port) = split_host_port(rest).map_err(|why| format!("pachd address {input:?}: {why}"))?;
        if host.is_empty() {
            return Err(format!("pachd address {input:?} has no host: use e.g. grpc://localhost:30650"));
        }
        Ok(Self { tls, host, port: port.unwrap_or(DEFAULT_PACHD_PORT) })
    }

    /// The URI tonic dials (`http://` or `https://`, brackets around IPv6 hosts).
    pub fn endpoint_uri(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}:{}", bracket(&self.host), self.port)
    }
}

impl fmt::Display for PachdAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "grpcs" } else { "grpc" };
        write!(f, "{scheme}://{}:{}", bracket(&self.host), self.port)
    }
}

fn bracket(host: &str) -> String {
    if host.contains(':') { format!("[{host}]") } else { host.to_owned() }
}

fn split_host_port(s: &str) -> Result<(String, Option<u16>), String> {
    let parse_port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("the port {p:?} is not a number from 1 to 65535"))
    };
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("an IPv6 host needs a closing ']'")?;
        check_ipv6(host)?;
        return match after {
            "" => Ok((host.to_owned(), None)),
            _ => match after.strip_prefix(':') {
                Some(p) => Ok((host.to_owned(), Some(parse_port(p)?))),
                None => Err("unexpected text after the IPv6 host".into()),
            },
        };
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((host, _)) if host.contains(':') => {
            check_ipv6(s)?;
            return Ok((s.to_owned(), None));
        }
        Some((host, port)) => (host, Some(parse_port(port)?)),
        None => (s, None),
    };
    // A DNS name or an IPv4 address: letters, digits, '-', '.' and (as some clusters' service names have) '_'.
    if let Some(bad) = host.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))) {
        return Err(format!("the host {host:?} contains {bad:?}; a host is a DNS name, an IPv4 address or [IPv6]"));
    }
    Ok((host.to_owned(), port))
}

/// An IPv6 host, with an optional zone (`fe80::1%eth0`) as Go's address parsing allows.
fn check_ipv6(host: &str) -> Result<(), String> {
    let (address, zone) = host.split_once('%').map_or((host, None), |(a, z)| (a, Some(z)));
    let zone_ok = zone.is_none_or(|z| !z.is_empty() && z.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'));
    if address.parse::<std::net::Ipv6Addr>().is_ok() && zone_ok {
        Ok(())
    } else {
        Err(format!("{host:?} is not an IPv6 address; write an IPv6 host in brackets, e.g. grpc://[::1]:30650"))
    }
}

/// Errors reading, resolving or writing the configuration. Each says which file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file exists but cannot be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys or bad values.
    #[error("invalid config file {}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the key and the fix.
        message: String,
    },
    /// A context names an unusable value.
    #[error("invalid config file {}: context {context:?}: key {key:?}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The context.
        context: String,
        /// The key.
        key: &'static str,
        /// What is wrong and the fix.
        message: String,
    },
    /// A request named a context that does not exist.
    #[error("unknown context {name:?} (known: {}): run pachagent context add {name} --pachd ADDRESS", known_list(.known))]
    UnknownContext {
        /// The name asked for.
        name: String,
        /// The names that exist.
        known: Vec<String>,
    },
    /// No context was named and none is active.
    #[error("no active context: run pachagent context add NAME --pachd ADDRESS, or pachagent context use NAME")]
    NoActiveContext,
    /// `context add` for a name that exists.
    #[error("context {0:?} already exists: remove it first with pachagent context remove {0}")]
    Exists(String),
    /// A value passed to `context add` is unusable.
    #[error("{0}")]
    BadValue(String),
    /// The file cannot be written.
    #[error("cannot write config file {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() { "none".to_owned() } else { known.join(", ") }
}

impl Config {
    /// Reads and resolves the file at `path`; a file that does not exist is an empty configuration.
    ///
    /// # Errors
    /// [`Error::Read`], [`Error::Parse`] or [`Error::Invalid`], naming the file, the key and the fix.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let raw = read_raw(path)?;
        Self::resolve(path, raw)
    }

    /// Parses and resolves configuration text as if it had been read from `path` (which errors name). Touches
    /// no file: the fuzz target for the parser calls this.
    ///
    /// # Errors
    /// [`Error::Parse`] or [`Error::Invalid`], as [`Config::load`].
    pub fn from_toml(path: &Path, text: &str) -> Result<Self, Error> {
        let raw = parse_raw(path, text)?;
        Self::resolve(path, raw)
    }

    fn resolve(path: &Path, raw: RawConfig) -> Result<Self, Error> {
        if let Some(v) = raw.version
            && v != CONFIG_VERSION
        {
            return Err(Error::Parse {
                path: path.to_owned(),
                message: format!(
                    "version = {v} is not supported by this pachagent (it reads version {CONFIG_VERSION}): upgrade pachagent or fix the key \"version\""
                ),
            });
        }
        let mut contexts = BTreeMap::new();
        for (name, rc) in raw.contexts {
            let ctx = resolve_context(path, &name, rc)?;
            contexts.insert(name, ctx);
        }
        if let Some(active) = &raw.active_context
            && !contexts.contains_key(active)
        {
            return Err(Error::Parse {
                path: path.to_owned(),
                message: format!(
                    "active_context = {active:?} names no context: add [contexts.{active}] or run pachagent context use NAME"
                ),
            });
        }
        let keyring_service = match raw.keyring_service {
            Some(s) if s.trim().is_empty() => {
                return Err(Error::Parse {
                    path: path.to_owned(),
                    message: "keyring_service is empty: remove the key to use \"pachagent\"".into(),
                });
            }
            Some(s) => s,
            None => DEFAULT_KEYRING_SERVICE.to_owned(),
        };
        Ok(Self {
            path: path.to_owned(),
            active_context: raw.active_context,
            store: raw.store.unwrap_or_default(),
            keyring_service,
            contexts,
        })
    }

    /// The context a request means: `name`, or the active context when `name` is empty.
    ///
    /// # Errors
    /// [`Error::UnknownContext`] or [`Error::NoActiveContext`].
    pub fn context(&self, name: &str) -> Result<&Context, Error> {
        let name = if name.is_empty() { self.active_context.as_deref().ok_or(Error::NoActiveContext)? } else { name };
        self.contexts.get(name).ok_or_else(|| Error::UnknownContext {
            name: name.to_owned(),
            known: self.contexts.keys().cloned().collect(),
        })
    }

    /// Adds a context to the file (and makes it active when it is the first one); returns the new configuration.
    ///
    /// # Errors
    /// [`Error::Exists`], [`Error::BadValue`] for an unusable address, or read/write errors.
    pub fn add_context(path: &Path, name: &str, new: NewContext) -> Result<Self, Error> {
        validate_context_name(name)?;
        let mut raw = read_raw(path)?;
        if raw.contexts.contains_key(name) {
            return Err(Error::Exists(name.to_owned()));
        }
        let pachd = PachdAddress::parse(&new.pachd_address).map_err(Error::BadValue)?;
        let rc = RawContext {
            pachd_address: Some(pachd.to_string()),
            ca_file: new.ca_file,
            issuer: new.issuer,
            issuer_url: new.issuer_url,
            issuer_ca_file: new.issuer_ca_file,
            client_id: new.client_id,
            scopes: new.scopes,
            redirect_port: None,
            redirect_ports: new.redirect_ports,
            redirect_host: new.redirect_host,
            method: new.method,
            sync_pachctl: new.sync_pachctl.then_some(true),
            refresh_margin: None,
            expiry_warnings: None,
        };
        resolve_context(path, name, rc.clone()).map_err(|e| Error::BadValue(e.to_string()))?;
        raw.contexts.insert(name.to_owned(), rc);
        if raw.active_context.is_none() {
            raw.active_context = Some(name.to_owned());
        }
        write_raw(path, raw)
    }

    /// Makes `name` the active context.
    ///
    /// # Errors
    /// [`Error::UnknownContext`] or read/write errors.
    pub fn use_context(path: &Path, name: &str) -> Result<Self, Error> {
        let mut raw = read_raw(path)?;
        if !raw.contexts.contains_key(name) {
            return Err(Error::UnknownContext { name: name.to_owned(), known: raw.contexts.keys().cloned().collect() });
        }
        raw.active_context = Some(name.to_owned());
        write_raw(path, raw)
    }

    /// Removes a context; the active context is cleared when it was this one.
    ///
    /// # Errors
    /// [`Error::UnknownContext`] or read/write errors.
    pub fn remove_context(path: &Path, name: &str) -> Result<Self, Error> {
        let mut raw = read_raw(path)?;
        if raw.contexts.remove(name).is_none() {
            return Err(Error::UnknownContext { name: name.to_owned(), known: raw.contexts.keys().cloned().collect() });
        }
        if raw.active_context.as_deref() == Some(name) {
            raw.active_context = None;
        }
        write_raw(path, raw)
    }
}

fn validate_context_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::BadValue(format!(
            "context name {name:?} is not usable: use 1 to 64 letters, digits, '-', '_' or '.'"
        )))
    }
}

fn resolve_context(path: &Path, name: &str, rc: RawContext) -> Result<Context, Error> {
    let invalid = |key: &'static str, message: String| Error::Invalid {
        path: path.to_owned(),
        context: name.to_owned(),
        key,
        message,
    };
    let address = rc.pachd_address.ok_or_else(|| {
        invalid("pachd_address", "is missing: set it to pachd's address, e.g. grpc://localhost:30650".into())
    })?;
    let pachd = PachdAddress::parse(&address).map_err(|m| invalid("pachd_address", m))?;
    if rc.ca_file.is_some() && !pachd.tls {
        return Err(invalid("ca_file", "needs a grpcs:// pachd_address (a CA is only used with TLS)".into()));
    }
    for (key, value) in [("issuer", &rc.issuer), ("issuer_url", &rc.issuer_url)] {
        if let Some(v) = value {
            let parsed = url::Url::parse(v)
                .map_err(|e| invalid(key, format!("{v:?} is not a URL ({e}): use e.g. https://tenant.auth0.com/")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(invalid(key, format!("{v:?} must be an http:// or https:// URL")));
            }
        }
    }
    if rc.issuer_url.is_some() && rc.issuer.is_none() {
        return Err(invalid("issuer_url", "needs issuer too (the value ID tokens carry in iss)".into()));
    }
    let mut redirect_ports: Vec<u16> = rc.redirect_port.into_iter().collect();
    for p in &rc.redirect_ports {
        if !redirect_ports.contains(p) {
            redirect_ports.push(*p);
        }
    }
    if redirect_ports.contains(&0) {
        return Err(invalid("redirect_ports", "0 is not a port: remove the key for a random port".into()));
    }
    let method = match (rc.method, &rc.issuer) {
        (Some(m), _) => m,
        (None, Some(_)) => Method::Oidc,
        (None, None) => Method::Pachd,
    };
    if matches!(method, Method::Oidc | Method::Device) && (rc.issuer.is_none() || rc.client_id.is_none()) {
        return Err(invalid(
            "method",
            format!("{:?} needs both issuer and client_id: set them, or use method = \"pachd\"", method.as_str()),
        ));
    }
    let duration = |key: &'static str, text: &str| {
        humantime::parse_duration(text)
            .map_err(|e| invalid(key, format!("{text:?} is not a duration ({e}): use e.g. \"5m\", \"1h\", \"1d\"")))
    };
    let refresh_margin = match &rc.refresh_margin {
        Some(text) => duration("refresh_margin", text)?,
        None => DEFAULT_REFRESH_MARGIN,
    };
    let expiry_warnings = match &rc.expiry_warnings {
        Some(list) => list.iter().map(|t| duration("expiry_warnings", t)).collect::<Result<Vec<_>, _>>()?,
        None => DEFAULT_EXPIRY_WARNINGS.to_vec(),
    };
    Ok(Context {
        name: name.to_owned(),
        pachd,
        ca_file: rc.ca_file,
        issuer: rc.issuer,
        issuer_url: rc.issuer_url,
        issuer_ca_file: rc.issuer_ca_file,
        client_id: rc.client_id,
        scopes: rc.scopes,
        redirect_ports,
        redirect_host: rc.redirect_host.unwrap_or_default(),
        method,
        sync_pachctl: rc.sync_pachctl.unwrap_or(false),
        refresh_margin,
        expiry_warnings,
    })
}

fn read_raw(path: &Path) -> Result<RawConfig, Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RawConfig::default()),
        Err(source) => return Err(Error::Read { path: path.to_owned(), source }),
    };
    parse_raw(path, &text)
}

fn parse_raw(path: &Path, text: &str) -> Result<RawConfig, Error> {
    toml::from_str(text).map_err(|e| Error::Parse {
        path: path.to_owned(),
        message: format!("{}: fix or remove that key (see pachagent context --help)", e.to_string().trim_end()),
    })
}

/// Writes atomically (a temporary file in the same directory, then a rename), owner-only.
fn write_raw(path: &Path, mut raw: RawConfig) -> Result<Config, Error> {
    raw.version = Some(CONFIG_VERSION);
    let werr = |source| Error::Write { path: path.to_owned(), source };
    let text = toml::to_string_pretty(&raw).map_err(|e| werr(std::io::Error::other(e.to_string())))?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(werr)?;
    let tmp = dir.join(format!(".{}.{}.tmp", file_name(path), std::process::id()));
    let result = (|| {
        let mut f = open_owner_only(&tmp)?;
        f.write_all(b"# pachagent configuration: edit freely or use `pachagent context`. No secrets live here.\n")?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(source) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(werr(source));
    }
    Config::resolve(path, raw)
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "config.toml".into())
}

fn open_owner_only(path: &Path) -> std::io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)
}

/// The configuration file: `explicit` (flag or `$PACHAGENT_CONFIG`, already merged by clap), else
/// `$XDG_CONFIG_HOME/pachagent/config.toml`, else `~/.config/pachagent/config.toml`.
pub fn config_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_owned();
    }
    let base = env_path("XDG_CONFIG_HOME")
        .or_else(|| env_path("HOME").map(|h| h.join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("pachagent").join("config.toml")
}

/// The agent's socket: `explicit` (flag or `$PACHAGENT_SOCKET`), else `$XDG_RUNTIME_DIR/pachagent/agent.sock`,
/// else `$TMPDIR/pachagent-<uid>/agent.sock` (a per-user directory, since `/tmp` is shared).
pub fn socket_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_owned();
    }
    if let Some(run) = env_path("XDG_RUNTIME_DIR") {
        return run.join("pachagent").join("agent.sock");
    }
    let tmp = env_path("TMPDIR").unwrap_or_else(std::env::temp_dir);
    tmp.join(format!("pachagent-{}", current_uid())).join("agent.sock")
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// The real uid of this process.
pub fn current_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

#[cfg(test)]
mod tests;
