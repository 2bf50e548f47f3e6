//! Whether this machine can show a web browser to the user, and opening one.
//!
//! The decision follows what kubectl, gh and gcloud do: macOS and Windows always have one; elsewhere a browser
//! is there when `$BROWSER` names one, when a graphical session is running (`$DISPLAY`, `$WAYLAND_DISPLAY`), or
//! under WSL when `wslview` can hand URLs to Windows. An SSH session without a display has none: the browser
//! the user sits in front of runs on another machine. [`detect`] is a pure function of an [`EnvSnapshot`], so
//! every rule is tested without touching the process environment. Nothing here prints.

use std::ffi::{OsStr, OsString};
use std::future::Future;
use std::io;
use std::path::Path;
use std::time::Duration;

/// The file WSL's kernel exposes when Windows programs can be started from Linux.
const WSL_INTEROP: &str = "/proc/sys/fs/binfmt_misc/WSLInterop";

/// How long the browser launcher may take to report. Graphical launchers return as soon as they have handed the
/// URL over; one that takes longer is stuck, and the login goes on without it.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// The operating-system family, as far as opening a browser goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// macOS: `open` always reaches the user's browser.
    MacOs,
    /// Windows: the shell always reaches the user's browser.
    Windows,
    /// Linux and the BSDs: it depends on the session.
    Unix,
}

/// What [`detect`] looks at, captured once from the process environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvSnapshot {
    /// The operating system (`None` is treated as [`Platform::Unix`]).
    pub os: Option<Platform>,
    /// `$BROWSER`.
    pub browser: Option<OsString>,
    /// `$DISPLAY`.
    pub display: Option<OsString>,
    /// `$WAYLAND_DISPLAY`.
    pub wayland_display: Option<OsString>,
    /// `$SSH_CONNECTION`.
    pub ssh_connection: Option<OsString>,
    /// `$SSH_TTY`.
    pub ssh_tty: Option<OsString>,
    /// `$WSL_DISTRO_NAME`.
    pub wsl_distro_name: Option<OsString>,
    /// Whether `/proc/sys/fs/binfmt_misc/WSLInterop` exists.
    pub wsl_interop: bool,
    /// Whether an executable `wslview` is on `$PATH`.
    pub wslview_on_path: bool,
}

impl EnvSnapshot {
    /// Reads the variables and files [`detect`] needs. Empty variables count as unset.
    pub fn capture() -> Self {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let os = if cfg!(target_os = "macos") {
            Platform::MacOs
        } else if cfg!(windows) {
            Platform::Windows
        } else {
            Platform::Unix
        };
        let linux = cfg!(target_os = "linux");
        Self {
            os: Some(os),
            browser: var("BROWSER"),
            display: var("DISPLAY"),
            wayland_display: var("WAYLAND_DISPLAY"),
            ssh_connection: var("SSH_CONNECTION"),
            ssh_tty: var("SSH_TTY"),
            wsl_distro_name: var("WSL_DISTRO_NAME"),
            wsl_interop: linux && Path::new(WSL_INTEROP).exists(),
            wslview_on_path: linux && var("PATH").is_some_and(|p| on_path(&p, "wslview")),
        }
    }
}

/// Whether an executable file `name` sits in one of the directories of `path` (a `$PATH` value).
fn on_path(path: &OsStr, name: &str) -> bool {
    std::env::split_paths(path).any(|dir| is_executable(&dir.join(name)))
}

#[cfg(unix)]
fn is_executable(file: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(file).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(file: &Path) -> bool {
    file.is_file()
}

/// Whether a browser can be opened here, and the reason, worded to follow "a browser is available: …" or
/// "no browser here: …".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrowserSupport {
    /// A browser can be opened on this machine.
    pub available: bool,
    /// Why, in a few words.
    pub reason: &'static str,
}

/// Decides whether a browser can be opened, from an environment snapshot.
pub fn detect(env: &EnvSnapshot) -> BrowserSupport {
    let yes = |reason| BrowserSupport { available: true, reason };
    let no = |reason| BrowserSupport { available: false, reason };
    match env.os.unwrap_or(Platform::Unix) {
        Platform::MacOs => return yes("macOS always has one"),
        Platform::Windows => return yes("Windows always has one"),
        Platform::Unix => {}
    }
    let wsl = env.wsl_interop || env.wsl_distro_name.is_some();
    if env.browser.is_some() {
        yes("$BROWSER is set")
    } else if wsl && env.wslview_on_path {
        yes("WSL with wslview")
    } else if env.display.is_some() || env.wayland_display.is_some() {
        yes("a graphical session is running")
    } else if env.ssh_connection.is_some() || env.ssh_tty.is_some() {
        no("this is an SSH session without a display")
    } else if wsl {
        no("this is WSL without wslview (install wslu, or set $BROWSER)")
    } else {
        no("no graphical session ($DISPLAY and $WAYLAND_DISPLAY are unset) and $BROWSER is unset")
    }
}

/// Starts opening `url` in the user's browser (honouring `$BROWSER`) on a thread of its own, at once, and
/// returns a future that reports how that went within [`OPEN_TIMEOUT`].
///
/// A detached thread rather than `spawn_blocking`: a text browser named in `$BROWSER` runs in the foreground
/// until the user quits it, and the runtime would wait for it at exit.
pub fn open(url: String) -> impl Future<Output = io::Result<()>> + Send + 'static {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let started = std::thread::Builder::new().name("open-browser".into()).spawn(move || {
        // Nobody listens any more when the login ended first.
        let _ = tx.send(webbrowser::open(&url));
    });
    async move {
        started?;
        match tokio::time::timeout(OPEN_TIMEOUT, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(io::Error::other("the browser launcher stopped without an answer")),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the browser launcher did not answer within {} s", OPEN_TIMEOUT.as_secs()),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some(s: &str) -> Option<OsString> {
        Some(OsString::from(s))
    }

    fn unix() -> EnvSnapshot {
        EnvSnapshot { os: Some(Platform::Unix), ..Default::default() }
    }

    #[test]
    fn macos_and_windows_always_have_a_browser() {
        for os in [Platform::MacOs, Platform::Windows] {
            let env = EnvSnapshot { os: Some(os), ssh_connection: some("10.0.0.1 5 10.0.0.2 22"), ..unix() };
            assert!(detect(&env).available, "{os:?}");
        }
    }

    #[test]
    fn a_desktop_session_has_a_browser() {
        assert!(detect(&EnvSnapshot { display: some(":0"), ..unix() }).available);
        assert!(detect(&EnvSnapshot { wayland_display: some("wayland-0"), ..unix() }).available);
    }

    #[test]
    fn browser_variable_wins_even_over_ssh() {
        let env = EnvSnapshot { browser: some("w3m"), ssh_tty: some("/dev/pts/3"), ..unix() };
        assert_eq!(detect(&env), BrowserSupport { available: true, reason: "$BROWSER is set" });
    }

    #[test]
    fn ssh_without_a_display_has_no_browser() {
        let env = EnvSnapshot { ssh_connection: some("10.0.0.1 5 10.0.0.2 22"), ..unix() };
        let support = detect(&env);
        assert!(!support.available);
        assert!(support.reason.contains("SSH"), "{support:?}");
        assert!(!detect(&EnvSnapshot { ssh_tty: some("/dev/pts/3"), ..unix() }).available);
    }

    #[test]
    fn ssh_with_x_forwarding_has_a_browser() {
        let env = EnvSnapshot { ssh_connection: some("a 1 b 22"), display: some("localhost:10.0"), ..unix() };
        assert!(detect(&env).available);
    }

    #[test]
    fn wsl_needs_wslview() {
        let with = EnvSnapshot { wsl_distro_name: some("Ubuntu"), wslview_on_path: true, ..unix() };
        assert_eq!(detect(&with), BrowserSupport { available: true, reason: "WSL with wslview" });
        let interop = EnvSnapshot { wsl_interop: true, wslview_on_path: true, ..unix() };
        assert!(detect(&interop).available);
        let without = EnvSnapshot { wsl_interop: true, ..unix() };
        let support = detect(&without);
        assert!(!support.available);
        assert!(support.reason.contains("wslview"), "{support:?}");
    }

    #[test]
    fn wslview_outside_wsl_means_nothing() {
        assert!(!detect(&EnvSnapshot { wslview_on_path: true, ..unix() }).available);
    }

    #[test]
    fn a_bare_console_has_no_browser() {
        let support = detect(&unix());
        assert!(!support.available);
        assert!(support.reason.contains("$DISPLAY"), "{support:?}");
        assert!(!detect(&EnvSnapshot::default()).available, "an unknown OS is treated as Unix");
    }

    #[test]
    fn path_lookup_finds_only_executables() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("wslview");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        let path = std::env::join_paths([Path::new("/nonexistent"), dir.path()]).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(!on_path(&path, "wslview"));
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(on_path(&path, "wslview"));
        assert!(!on_path(&path, "xdg-open-nope"));
    }
}
