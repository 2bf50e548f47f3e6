//! The side-by-side row: Debian's `oidc-agent` (the C agent pachagent is compared with) holding a token from the
//! same dev identity provider as the benchmark's agent, so that `oidc-token ACCOUNT` and `pachagent token` can be
//! timed in turns and the two agents' memory read in one run.
//!
//! Set-up, without a prompt or a browser: the benchmark logs in at the dev IdP as the `pachagent` public client
//! (code + PKCE, the scripted user) to get a refresh token, starts `oidc-agent` in the foreground on a private
//! socket, config directory and `$HOME`, and creates the account with `oidc-gen --rt-env --pw-env --prompt=none`
//! (oidc-gen loads it into the agent). Everything lives in a temporary directory and the agent is killed when
//! this is dropped.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use pachagent::devstack::idp::{self, DEV_EMAIL, PACHAGENT_CLIENT_ID};
use sha2::Digest as _;

use super::Result;

/// The account name oidc-agent keeps the token under.
pub const ACCOUNT: &str = "bench";

/// A running oidc-agent with one loaded account.
pub struct OidcAgent {
    dir: tempfile::TempDir,
    proxy: Child,
}

impl OidcAgent {
    /// Makes sure Debian's oidc-agent is installed (installing `oidc-agent-cli` with apt-get when running as root
    /// and it is missing); `false` when it cannot be had here.
    pub fn ensure_installed() -> bool {
        if installed() {
            return true;
        }
        if !rustix::process::getuid().is_root() {
            eprintln!("oidc-agent is not installed (apt-get install oidc-agent-cli): no side-by-side row");
            return false;
        }
        eprintln!("installing oidc-agent-cli for the side-by-side row...");
        let apt = |args: &[&str]| {
            Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let install = ["install", "-y", "-q", "--no-install-recommends", "oidc-agent-cli"];
        // A fresh machine's package lists may be missing or stale: update once when the install fails.
        let done = apt(&install) || (apt(&["update", "-q"]) && apt(&install));
        if !done {
            eprintln!("apt-get could not install oidc-agent-cli: no side-by-side row");
            return false;
        }
        installed()
    }

    /// Starts oidc-agent and loads an account for `issuer`'s dev IdP into it.
    pub async fn start(issuer: &str) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("pachagent-bench-oidc-agent-").tempdir()?;
        for sub in ["home", "config", "tmp"] {
            std::fs::create_dir(dir.path().join(sub))?;
        }
        let socket = dir.path().join("tmp").join("oidc-agent.sock");
        let proxy = command(dir.path(), "oidc-agent")
            .arg("-d")
            .arg(format!("--socket-path={}", socket.display()))
            .arg("--no-autoload")
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(dir.path().join("oidc-agent.log"))?))
            .spawn()?;
        let agent = Self { dir, proxy };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            if Instant::now() > deadline {
                return Err("oidc-agent did not create its socket within 10 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let refresh_token = refresh_token(issuer).await?;
        let out = agent
            .command("oidc-gen")
            .arg(ACCOUNT)
            .arg(format!("--iss={issuer}"))
            .arg(format!("--client-id={PACHAGENT_CLIENT_ID}"))
            // The public client has no secret; without the empty one oidc-gen asks for it.
            .arg("--client-secret=")
            .arg("--scope=openid email profile offline_access")
            .args(["--rt-env", "--pw-env", "--prompt=none", "--confirm-default"])
            .env("OIDC_REFRESH_TOKEN", refresh_token)
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(format!("oidc-gen failed: {}", String::from_utf8_lossy(&out.stderr).trim()).into());
        }
        let token = agent.command("oidc-token").arg(ACCOUNT).output()?;
        if !token.status.success() || token.stdout.len() < 16 {
            return Err(format!("oidc-token failed: {}", String::from_utf8_lossy(&token.stderr).trim()).into());
        }
        Ok(agent)
    }

    /// `PROGRAM` with the agent's private environment.
    pub fn command(&self, program: &str) -> Command {
        command(self.dir.path(), program)
    }

    /// The resident memory of the agent's processes: the proxy and its children (the daemon), in MB.
    pub fn rss_mb(&self) -> Result<f64> {
        let mut total = super::rss_mb(self.proxy.id())?;
        for child in children(self.proxy.id()) {
            total += super::rss_mb(child)?;
        }
        Ok(total)
    }
}

impl Drop for OidcAgent {
    fn drop(&mut self) {
        for child in children(self.proxy.id()) {
            super::signal_kill(child);
        }
        let _ = self.proxy.kill();
        let _ = self.proxy.wait();
    }
}

fn installed() -> bool {
    ["oidc-agent", "oidc-gen", "oidc-token"].iter().all(|program| {
        Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
    })
}

/// `program` with `$HOME`, `$TMPDIR`, `$OIDC_CONFIG_DIR` and `$OIDC_SOCK` inside `dir`, and the account
/// file's encryption password in `$OIDC_ENCRYPTION_PW` (read with `--pw-env`).
fn command(dir: &Path, program: &str) -> Command {
    let mut cmd = Command::new(program);
    let env: [(&str, OsString); 6] = [
        ("HOME", dir.join("home").into()),
        ("TMPDIR", dir.join("tmp").into()),
        ("OIDC_CONFIG_DIR", dir.join("config").into()),
        ("OIDC_SOCK", dir.join("tmp").join("oidc-agent.sock").into()),
        ("OIDC_ENCRYPTION_PW", "pachagent-bench".into()),
        ("OIDC_AGENT_NOCOLOR", "1".into()),
    ];
    cmd.envs(env).env_remove("OIDCD_PID").env_remove("OIDC_REMOTE_SOCK");
    cmd
}

/// The pids whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        // Field 4, the parent's pid.
        .filter(|&candidate| {
            super::stat_fields(candidate).ok().and_then(|fields| fields.get(1)?.parse::<u32>().ok()) == Some(pid)
        })
        .collect()
}

/// A refresh token of the dev IdP for the `pachagent` client: code + PKCE, with the scripted user signing in.
async fn refresh_token(issuer: &str) -> Result<String> {
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
    let discovery: serde_json::Value =
        http.get(format!("{issuer}/.well-known/openid-configuration")).send().await?.json().await?;
    let endpoint = |name: &str| {
        discovery[name].as_str().map(str::to_owned).ok_or_else(|| format!("the discovery document has no {name}"))
    };
    let verifier = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&verifier));
    let redirect_uri = "http://127.0.0.1:9/callback";
    let state = uuid::Uuid::new_v4().simple().to_string();
    let mut authorize = url::Url::parse(&endpoint("authorization_endpoint")?)?;
    authorize
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", PACHAGENT_CLIENT_ID)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", "openid email profile offline_access")
        .append_pair("state", &state)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    let back = idp::complete_login(&authorize, DEV_EMAIL).await?;
    let code = back
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| format!("the IdP sent no code back: {back}"))?;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect_uri),
        ("client_id", PACHAGENT_CLIENT_ID),
        ("code_verifier", verifier.as_str()),
    ];
    let tokens: serde_json::Value = http.post(endpoint("token_endpoint")?).form(&form).send().await?.json().await?;
    tokens["refresh_token"].as_str().map(str::to_owned).ok_or_else(|| "the IdP issued no refresh token".into())
}
