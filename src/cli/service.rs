//! `pachagent service`: install, remove or inspect the agent as a per-user service of the OS service manager.
//!
//! On Linux that is a systemd **user** unit pair with socket activation (`pachagent.socket` listens on the
//! agent's default socket and starts `pachagent.service` on the first connection); on macOS a launchd agent
//! that runs at login. The unit texts are the templates under `packaging/` with pachagentd's path filled in;
//! both platforms' texts are generated everywhere, and only the calls to `systemctl`/`launchctl` differ.
//! This module writes only the service manager's files and prints through [`super::output`].

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::{Args, Subcommand};

use super::commands::Globals;
use super::output::{self, ServiceFile, ServiceUnitState};
use crate::config;

/// The systemd socket unit, as committed.
const SYSTEMD_SOCKET: &str = include_str!("../../packaging/systemd/pachagent.socket");
/// The systemd service unit, as committed, with `@EXE@` for the binary.
const SYSTEMD_SERVICE: &str = include_str!("../../packaging/systemd/pachagent.service");
/// The launchd agent, as committed, with `@EXE@` for the binary and `@LOG@` for its log.
const LAUNCHD_PLIST: &str = include_str!("../../packaging/launchd/io.pachagent.agent.plist");

/// The socket unit's name: the one to enable, since it starts the service.
const SOCKET_UNIT: &str = "pachagent.socket";
/// The service unit's name.
const SERVICE_UNIT: &str = "pachagent.service";
/// The launchd label (the plist's file name without `.plist`).
const LAUNCHD_LABEL: &str = "io.pachagent.agent";

/// `pachagent service` subcommands.
#[derive(Debug, Subcommand)]
pub(super) enum ServiceCommand {
    /// Install the agent as a user service and start it (systemd socket activation, or a launchd agent)
    #[command(
        long_about = "Install the agent as a service of your user. On Linux, write pachagent.socket and \
                      pachagent.service to ~/.config/systemd/user/ and run `systemctl --user daemon-reload` and \
                      `systemctl --user enable --now pachagent.socket`: systemd then listens on the agent's \
                      socket and starts the agent on the first connection. On macOS, write a launchd agent to \
                      ~/Library/LaunchAgents/ and load it. The units run the agent program, pachagentd \
                      (installed next to pachagent), by its absolute path. With --print, show the files instead \
                      of writing them.",
        after_help = "Examples:\n  pachagent service install\n  pachagent service install --print"
    )]
    Install(InstallArgs),
    /// Stop the service and remove its files
    Uninstall,
    /// Show whether the service is installed, enabled and running
    Status,
}

#[derive(Debug, Args)]
pub(super) struct InstallArgs {
    /// Print the files that would be written, and change nothing
    #[arg(long)]
    print: bool,
}

/// The service manager this platform uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Platform {
    Systemd,
    Launchd,
}

impl Platform {
    fn current() -> Self {
        if cfg!(target_os = "macos") { Platform::Launchd } else { Platform::Systemd }
    }
}

/// The systemd unit pair for the binary at `exe`: (file name, text).
pub fn systemd_units(exe: &Path) -> [(&'static str, String); 2] {
    [(SOCKET_UNIT, SYSTEMD_SOCKET.to_owned()), (SERVICE_UNIT, SYSTEMD_SERVICE.replace("@EXE@", &systemd_quote(exe)))]
}

/// The launchd agent for the binary at `exe`, logging to `log`.
pub fn launchd_plist(exe: &Path, log: &Path) -> String {
    LAUNCHD_PLIST
        .replace("@EXE@", &xml_escape(&exe.to_string_lossy()))
        .replace("@LOG@", &xml_escape(&log.to_string_lossy()))
}

/// A path as one word of a systemd command line: `%` doubled (specifier syntax), and quoted when it holds
/// whitespace, quotes or backslashes.
fn systemd_quote(path: &Path) -> String {
    let s = path.to_string_lossy().replace('%', "%%");
    if s.chars().any(|c| c.is_whitespace() || c == '"' || c == '\'' || c == '\\') {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Runs `pachagent service …`: 0 on success, 1 when the service is not (fully) in place.
pub(super) async fn run(g: &Globals, cmd: ServiceCommand) -> ExitCode {
    let result = match cmd {
        ServiceCommand::Install(args) => install(g, args.print),
        ServiceCommand::Uninstall => uninstall(),
        ServiceCommand::Status => status(g),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            let _ = output::error(&mut io::stderr(), &e);
            ExitCode::FAILURE
        }
    }
}

/// The files to write on this platform.
fn files(platform: Platform) -> io::Result<Vec<ServiceFile>> {
    // The units start the agent program itself, not the front that would hand over to it.
    let exe = crate::programs::companion(crate::programs::AGENT).map_err(io::Error::other)?;
    let dir = service_dir(platform)?;
    Ok(match platform {
        Platform::Systemd => {
            systemd_units(&exe).into_iter().map(|(name, text)| ServiceFile { path: dir.join(name), text }).collect()
        }
        Platform::Launchd => {
            let log = home()?.join("Library").join("Logs").join("pachagent.log");
            vec![ServiceFile { path: dir.join(format!("{LAUNCHD_LABEL}.plist")), text: launchd_plist(&exe, &log) }]
        }
    })
}

/// `~/.config/systemd/user` (or under `$XDG_CONFIG_HOME`), or `~/Library/LaunchAgents`.
fn service_dir(platform: Platform) -> io::Result<PathBuf> {
    Ok(match platform {
        Platform::Systemd => match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
            Some(base) => PathBuf::from(base),
            None => home()?.join(".config"),
        }
        .join("systemd")
        .join("user"),
        Platform::Launchd => home()?.join("Library").join("LaunchAgents"),
    })
}

fn home() -> io::Result<PathBuf> {
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| io::Error::other("$HOME is not set: cannot tell where your service files go"))
}

fn install(g: &Globals, print: bool) -> io::Result<bool> {
    let platform = Platform::current();
    let files = files(platform)?;
    let (mut out, mut err) = (io::stdout(), io::stderr());
    if print {
        output::service_files(&mut out, &files)?;
        return Ok(true);
    }
    for file in &files {
        write_file(&file.path, &file.text)?;
    }
    output::service_written(&mut out, &files)?;
    let default_socket = config::socket_path(None);
    if platform == Platform::Systemd && g.socket != default_socket {
        output::warning(
            &mut err,
            &format!(
                "the service listens on {}, but this shell's commands use {} (--socket or $PACHAGENT_SOCKET)",
                default_socket.display(),
                g.socket.display()
            ),
        )?;
    }
    if platform == Platform::Systemd
        && let Some(pid) = running_agent(&default_socket)
    {
        output::warning(
            &mut err,
            &format!(
                "an agent started outside systemd is running (pid {pid}); it keeps the socket's lock, so the service \
                 cannot start until it stops: run kill {pid}"
            ),
        )?;
    }
    let steps: Vec<Vec<String>> = match platform {
        Platform::Systemd => vec![
            args(&["systemctl", "--user", "daemon-reload"]),
            args(&["systemctl", "--user", "enable", "--now", SOCKET_UNIT]),
        ],
        Platform::Launchd => {
            let plist = files.first().map(|f| f.path.to_string_lossy().into_owned()).unwrap_or_default();
            vec![vec!["launchctl".into(), "bootstrap".into(), gui_domain(), plist]]
        }
    };
    for (i, step) in steps.iter().enumerate() {
        if let Err(reason) = run_tool(step) {
            output::service_manual(&mut err, &reason, &steps[i..])?;
            return Ok(false);
        }
    }
    output::service_started(&mut out, platform == Platform::Systemd, &default_socket)?;
    Ok(true)
}

/// The pid of an agent holding the single-instance lock beside `socket`, if one does.
fn running_agent(socket: &Path) -> Option<u32> {
    use std::io::Read;
    let mut lock = std::fs::File::open(crate::daemon::socket::lock_path(socket)).ok()?;
    match lock.try_lock_shared() {
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            lock.read_to_string(&mut pid).ok()?;
            pid.trim().parse().ok()
        }
        _ => None,
    }
}

fn uninstall() -> io::Result<bool> {
    let platform = Platform::current();
    let files = files(platform)?;
    let (mut out, mut err) = (io::stdout(), io::stderr());
    let installed: Vec<&ServiceFile> = files.iter().filter(|f| f.path.exists()).collect();
    if installed.is_empty() {
        output::service_not_installed(&mut out)?;
        return Ok(true);
    }
    let stop = match platform {
        Platform::Systemd => args(&["systemctl", "--user", "disable", "--now", SOCKET_UNIT, SERVICE_UNIT]),
        Platform::Launchd => vec!["launchctl".into(), "bootout".into(), format!("{}/{LAUNCHD_LABEL}", gui_domain())],
    };
    let stopped = run_tool(&stop);
    if let Err(reason) = &stopped {
        output::warning(&mut err, &format!("could not stop the service ({reason}); removing its files anyway"))?;
    }
    for file in &installed {
        match std::fs::remove_file(&file.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("cannot remove {}: {e}", file.path.display()))),
        }
    }
    if platform == Platform::Systemd && stopped.is_ok() {
        let _ = run_tool(&args(&["systemctl", "--user", "daemon-reload"]));
    }
    output::service_removed(&mut out, &installed)?;
    Ok(true)
}

fn status(g: &Globals) -> io::Result<bool> {
    let platform = Platform::current();
    let files = files(platform)?;
    let units: Vec<ServiceUnitState> = match platform {
        Platform::Systemd => files
            .iter()
            .zip([SOCKET_UNIT, SERVICE_UNIT])
            .map(|(file, name)| ServiceUnitState {
                name: name.to_owned(),
                path: file.path.clone(),
                installed: file.path.exists(),
                enabled: query(&args(&["systemctl", "--user", "is-enabled", name])),
                active: query(&args(&["systemctl", "--user", "is-active", name])),
            })
            .collect(),
        Platform::Launchd => files
            .iter()
            .map(|file| {
                let target = format!("{}/{LAUNCHD_LABEL}", gui_domain());
                let loaded = run_tool(&["launchctl".into(), "print".into(), target]);
                ServiceUnitState {
                    name: LAUNCHD_LABEL.to_owned(),
                    path: file.path.clone(),
                    installed: file.path.exists(),
                    enabled: Ok(if loaded.is_ok() { "loaded" } else { "not loaded" }.to_owned()),
                    active: loaded.map(|()| "loaded".to_owned()),
                }
            })
            .collect(),
    };
    output::service_status(&mut io::stdout(), &units, g.json)?;
    Ok(units.iter().all(|u| u.installed))
}

fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

/// launchd's domain for this user's GUI session.
fn gui_domain() -> String {
    format!("gui/{}", config::current_uid())
}

/// Runs a service-manager command; the error says why it did not succeed, in the tool's words.
fn run_tool(argv: &[String]) -> Result<(), String> {
    let out = run_capture(argv)?;
    if out.status.success() {
        Ok(())
    } else {
        let said = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        Err(if said.is_empty() { format!("`{}` failed with {}", argv.join(" "), out.status) } else { said })
    }
}

/// The first line a query command prints (`systemctl is-enabled` answers on stdout even when it fails).
fn query(argv: &[String]) -> Result<String, String> {
    let out = run_capture(argv)?;
    let answer = String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("").trim().to_owned();
    if answer.is_empty() { Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()) } else { Ok(answer) }
}

fn run_capture(argv: &[String]) -> Result<std::process::Output, String> {
    let (program, rest) = argv.split_first().ok_or_else(|| "no command".to_owned())?;
    Command::new(program).args(rest).output().map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => format!("{program} is not installed here"),
        _ => format!("cannot run {program}: {e}"),
    })
}

/// Writes a service file readable by the service manager (0644) through a temporary file and a rename.
fn write_file(path: &Path, text: &str) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let context = |e: io::Error| io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(context)?;
    }
    let tmp = path.with_extension("pachagent-tmp");
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o644).open(&tmp).map_err(context)?;
    file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(context)?;
    std::fs::rename(&tmp, path).map_err(context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_runs_the_binary_by_its_absolute_path() {
        let [(_, socket), (_, service)] = systemd_units(Path::new("/opt/pach agent/bin/pachagent"));
        assert!(socket.contains("ListenStream=%t/pachagent/agent.sock\n"));
        assert!(service.contains("\nExecStart=\"/opt/pach agent/bin/pachagent\" serve\n"), "{service}");
        let [_, (_, plain)] = systemd_units(Path::new("/usr/bin/pachagent"));
        assert!(plain.contains("\nExecStart=/usr/bin/pachagent serve\n"));
        assert!(!plain.contains('@'), "every placeholder is filled");
    }

    #[test]
    fn a_percent_sign_in_the_path_is_not_a_systemd_specifier() {
        let [_, (_, service)] = systemd_units(Path::new("/home/a%b/pachagent"));
        assert!(service.contains("ExecStart=/home/a%%b/pachagent serve"));
    }

    #[test]
    fn the_launchd_agent_escapes_xml_and_fills_every_placeholder() {
        let plist =
            launchd_plist(Path::new("/Users/a&b/pachagent"), Path::new("/Users/a&b/Library/Logs/pachagent.log"));
        assert!(plist.contains("<string>/Users/a&amp;b/pachagent</string>\n\t\t<string>serve</string>"));
        assert!(plist.contains("<string>/Users/a&amp;b/Library/Logs/pachagent.log</string>"));
        assert!(plist.contains("<string>io.pachagent.agent</string>"));
        assert!(!plist.contains("@EXE@") && !plist.contains("@LOG@"));
    }
}
