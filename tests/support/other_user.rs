//! Another local user, for the attacks another user of the same machine can make: a real system account
//! (`useradd --system`, which the test needs root for, as CI has), and commands run as that uid with `setpriv`.
//! Nothing here pretends: the kernel sees a different uid.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The account's name.
pub const NAME: &str = "pachagent-other";

/// A second local user.
pub struct OtherUser {
    pub uid: u32,
    pub gid: u32,
}

impl OtherUser {
    /// The account, created when missing. Panics with the fix unless this test runs as root.
    pub fn get() -> Self {
        assert!(
            pachagent::config::current_uid() == 0,
            "this test needs root to create a second local user ({NAME}) and act as it: run it as root, as CI does"
        );
        if lookup().is_none() {
            let out = Command::new("useradd")
                .args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", NAME])
                .output()
                .unwrap_or_else(|e| panic!("cannot run useradd ({e}): apt-get install passwd"));
            // Tests run in parallel: another may have created it meanwhile (useradd then exits 9).
            assert!(
                out.status.success() || lookup().is_some(),
                "useradd {NAME} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let (uid, gid) = lookup().expect("the account exists now");
        assert_ne!(uid, 0);
        Self { uid, gid }
    }

    /// `program args…` as this user (no supplementary groups), ready to run.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--clear-groups")
            .arg("--")
            .arg(program)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", "/nonexistent")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `sh -c script` as this user and requires it to succeed.
    #[track_caller]
    pub fn sh(&self, script: &str) -> Output {
        let out = self.command("sh", &["-c", script]).output().unwrap();
        assert!(
            out.status.success(),
            "as {NAME}: {script}\nfailed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Starts a program as this user in the background; it dies with the returned guard.
    pub fn spawn(&self, program: &str, args: &[&str]) -> Running {
        let child = self.command(program, args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        Running { child }
    }
}

fn lookup() -> Option<(u32, u32)> {
    let out = Command::new("getent").args(["passwd", NAME]).output().ok()?;
    let line = String::from_utf8(out.stdout).ok()?;
    let fields: Vec<&str> = line.trim().split(':').collect();
    Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?))
}

/// A background process of the other user's; killed when dropped.
pub struct Running {
    pub child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory everyone may write to with the sticky bit, like `/tmp`, for the victim's `$TMPDIR`; its parent is
/// traversable by the other user.
pub fn shared_tmp(base: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o755)).unwrap();
    let shared = base.join("shared-tmp");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    shared
}

/// A Python program, run as the other user, that listens on `address` (a Unix socket path, or `[::1]:PORT`) and
/// writes one line per event to `log` ("accepted" when a connection comes, then "bytes N" when it closes after
/// N bytes), so a test can tell whether the victim sent anything.
pub const LISTENER: &str = r#"
import socket, sys, threading
address, log = sys.argv[1], sys.argv[2]
if address.startswith("["):
    host, port = address[1:].split("]:")
    s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, int(port)))
else:
    s = socket.socket(socket.AF_UNIX); s.bind(address)
s.listen(16)
print("listening", flush=True)
def serve(c):
    n = 0
    c.settimeout(5)
    try:
        while True:
            b = c.recv(65536)
            if not b: break
            n += len(b)
    except Exception:
        pass
    with open(log, "a") as f: f.write(f"bytes {n}\n")
while True:
    c, _ = s.accept()
    with open(log, "a") as f: f.write("accepted\n")
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;
