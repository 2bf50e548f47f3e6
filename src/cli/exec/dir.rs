//! The private directory of one `exec`: where its command's pachctl config lives, and the sweep that removes the
//! directories of `exec`s that were killed before they could remove their own.
//!
//! Each is `pachagent-exec-<pid>-<random>` (0700) in `$XDG_RUNTIME_DIR` when there is one (the user's own tmpfs,
//! emptied at logout), else in the system temp dir. The pid in the name is how a later `exec` tells a directory
//! left by a dead one (SIGKILL, a crash, a reboot of the temp dir's machine) from one still in use: at start it
//! removes every such directory of this user's whose pid no longer runs. A pid reused since is taken for alive;
//! its directory then waits for a later sweep.

use std::fs::{self, DirBuilder};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::ExecError;
use crate::config::current_uid;

/// The names of exec directories begin with this.
const PREFIX: &str = "pachagent-exec-";

/// A fresh owner-only directory, removed with everything in it when dropped.
pub(super) struct ExecDir {
    pub(super) path: PathBuf,
    removed: bool,
}

impl ExecDir {
    /// Sweeps what dead `exec`s left, then makes this one's directory.
    pub(super) fn create() -> Result<Self, ExecError> {
        let base = base_dir();
        sweep(&base);
        let path = base.join(format!("{PREFIX}{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()));
        let err = |source| ExecError::TempDir { dir: base.clone(), source };
        // `create`, not `create_dir_all`: it fails on anything already there, a symbolic link included.
        DirBuilder::new().mode(0o700).create(&path).map_err(err)?;
        let dir = Self { path, removed: false };
        // The umask can only take bits away at creation; this makes the mode exact.
        fs::set_permissions(&dir.path, fs::Permissions::from_mode(0o700)).map_err(err)?;
        Ok(dir)
    }

    /// Removes the directory now, saying so when that fails (it holds a token).
    pub(super) fn remove(mut self) -> Result<(), String> {
        self.removed = true;
        fs::remove_dir_all(&self.path).map_err(|e| {
            format!("cannot remove {}, which holds a Pachyderm token: {e}; remove it yourself", self.path.display())
        })
    }
}

impl Drop for ExecDir {
    fn drop(&mut self) {
        if !self.removed {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// `$XDG_RUNTIME_DIR` when set to a directory of this user's, else the system temp dir.
fn base_dir() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|dir| fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir() && m.uid() == current_uid()))
        .unwrap_or_else(std::env::temp_dir)
}

/// Removes the exec directories in `base` that belong to this user and name a process that no longer runs.
/// Anything else (another user's, a link, a live pid, a name without a pid) is left alone.
fn sweep(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(pid_of) else { continue };
        let path = entry.path();
        // The entry itself, not what a link points to.
        let Ok(meta) = fs::symlink_metadata(&path) else { continue };
        if !meta.is_dir() || meta.uid() != current_uid() || process_runs(pid) {
            continue;
        }
        match fs::remove_dir_all(&path) {
            Ok(()) => tracing::debug!(dir = %path.display(), pid, "removed what a killed exec left"),
            Err(e) => tracing::debug!(dir = %path.display(), error = %e, "could not remove what a killed exec left"),
        }
    }
}

/// The pid in an exec directory's name.
fn pid_of(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, random) = rest.split_once('-')?;
    (!random.is_empty()).then_some(())?;
    pid.parse().ok().filter(|p| *p > 0)
}

/// Whether a process with this pid exists (one of another user's counts too).
fn process_runs(pid: i32) -> bool {
    let Some(pid) = rustix::process::Pid::from_raw(pid) else { return false };
    !matches!(rustix::process::test_kill_process(pid), Err(rustix::io::Errno::SRCH))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_dir_is_owner_only_named_by_its_pid_and_goes_away() {
        let dir = ExecDir::create().unwrap();
        let path = dir.path.clone();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o700);
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        assert_eq!(pid_of(&name), Some(std::process::id() as i32), "{name}");
        fs::write(path.join("f"), "x").unwrap();
        dir.remove().unwrap();
        assert!(!path.exists());
        let dropped = ExecDir::create().unwrap().path.clone();
        assert!(!dropped.exists(), "dropping removes it too");
    }

    #[test]
    fn the_sweep_removes_only_this_users_directories_of_processes_that_are_gone() {
        let base = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let left = base.path().join(format!("{PREFIX}{dead}-abc"));
        let live = base.path().join(format!("{PREFIX}{}-abc", std::process::id()));
        let old_style = base.path().join(format!("{PREFIX}{}", uuid::Uuid::new_v4().simple()));
        let target = base.path().join("not-ours-to-remove");
        for d in [&left, &live, &old_style, &target] {
            fs::create_dir(d).unwrap();
            fs::write(d.join("config.json"), "{}").unwrap();
        }
        let link = base.path().join(format!("{PREFIX}{dead}-link"));
        std::os::unix::fs::symlink(&target, &link).unwrap();
        sweep(base.path());
        assert!(!left.exists(), "the dead exec's directory is gone");
        assert!(live.exists() && old_style.exists(), "a live pid and a name without one stay");
        assert!(target.join("config.json").exists(), "a link is not followed");
    }

    #[test]
    fn names_without_a_pid_have_none() {
        assert_eq!(pid_of("pachagent-exec-12-ab"), Some(12));
        for name in ["pachagent-exec-", "pachagent-exec-12", "pachagent-exec-12-", "pachagent-exec-0-a", "other-1-a"] {
            assert_eq!(pid_of(name), None, "{name}");
        }
    }
}
