//! The printers of `pachagent service`, which show the service manager's files and state.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::format::json_line;

/// A file `pachagent service install` writes.
#[derive(Debug, Clone)]
pub struct ServiceFile {
    /// Where it goes.
    pub path: PathBuf,
    /// What it holds.
    pub text: String,
}

/// What `pachagent service status` found out about one unit (or launchd agent).
#[derive(Debug)]
pub struct ServiceUnitState {
    /// The unit's name, e.g. `pachagent.socket`.
    pub name: String,
    /// Its file.
    pub path: PathBuf,
    /// Whether the file exists.
    pub installed: bool,
    /// The service manager's word on whether it starts by itself (`enabled`, `disabled`…), or why it could not
    /// be asked.
    pub enabled: Result<String, String>,
    /// The service manager's word on whether it runs now (`active`, `inactive`, `failed`…), or why it could not
    /// be asked.
    pub active: Result<String, String>,
}

/// `service install --print`: each file under a `# <path>` line, separated by a blank line.
pub fn service_files(out: &mut dyn Write, files: &[ServiceFile]) -> io::Result<()> {
    for (i, file) in files.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        writeln!(out, "# {}", file.path.display())?;
        out.write_all(file.text.as_bytes())?;
    }
    out.flush()
}

/// `service install`: the files written.
pub fn service_written(out: &mut dyn Write, files: &[ServiceFile]) -> io::Result<()> {
    for file in files {
        writeln!(out, "Wrote {}", file.path.display())?;
    }
    Ok(())
}

/// `service install` when the service manager could not be told: why, and the commands left to run.
pub fn service_manual(err: &mut dyn Write, reason: &str, commands: &[Vec<String>]) -> io::Result<()> {
    let tool = commands.first().and_then(|c| c.first()).map_or("the service manager", String::as_str);
    writeln!(err, "pachagent: the files are written, but {tool} could not be used: {reason}")?;
    writeln!(err, "When it can be (e.g. in your desktop session), run:")?;
    for command in commands {
        writeln!(err, "  {}", command.join(" "))?;
    }
    Ok(())
}

/// `service install` after the service manager took it.
pub fn service_started(out: &mut dyn Write, socket_activated: bool, socket: &Path) -> io::Result<()> {
    if socket_activated {
        writeln!(out, "Enabled pachagent.socket: the agent starts on the first connection to {}.", socket.display())
    } else {
        writeln!(out, "Loaded the agent: it runs now and at every login.")
    }
}

/// `service uninstall` with nothing to remove.
pub fn service_not_installed(out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "pachagent is not installed as a service.")
}

/// `service uninstall`: the files removed.
pub fn service_removed(out: &mut dyn Write, files: &[&ServiceFile]) -> io::Result<()> {
    for file in files {
        writeln!(out, "Removed {}", file.path.display())?;
    }
    Ok(())
}

#[derive(Serialize)]
struct UnitJson<'a> {
    name: &'a str,
    path: String,
    installed: bool,
    enabled: Option<&'a str>,
    active: Option<&'a str>,
    error: Option<&'a str>,
}

/// `service status`: one line per unit (`<name>  installed|not installed  <enabled>, <active>  <path>`), or
/// one JSON object per unit.
pub fn service_status(out: &mut dyn Write, units: &[ServiceUnitState], json: bool) -> io::Result<()> {
    for unit in units {
        let error = unit.enabled.as_ref().err().or(unit.active.as_ref().err()).map(String::as_str);
        if json {
            json_line(
                out,
                &UnitJson {
                    name: &unit.name,
                    path: unit.path.display().to_string(),
                    installed: unit.installed,
                    enabled: unit.enabled.as_deref().ok(),
                    active: unit.active.as_deref().ok(),
                    error,
                },
            )?;
            continue;
        }
        let installed = if unit.installed { "installed" } else { "not installed" };
        let state = match (&unit.enabled, &unit.active) {
            (Ok(enabled), Ok(active)) => format!("{enabled}, {active}"),
            _ => format!("state unknown ({})", error.unwrap_or("")),
        };
        writeln!(out, "{:<18} {installed}, {state}  {}", unit.name, unit.path.display())?;
    }
    Ok(())
}
