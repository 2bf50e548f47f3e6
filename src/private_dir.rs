//! Directories that only their owner can change, and the files pachagent keeps in them, opened so that another
//! local user cannot redirect them.
//!
//! The agent's socket directory can be in a place everyone writes to (`$TMPDIR/pachagent-<uid>/` when there is no
//! `$XDG_RUNTIME_DIR`: SSH without pam_systemd, cron, `su`, containers). Another user may have made that path
//! first, as a directory of theirs or a link to one, and planted links inside it. So a [`PrivateDir`] is opened
//! once, without following a link (`O_NOFOLLOW | O_DIRECTORY`), and checked through that open handle — a real
//! directory, owned by this user, that nobody else can write to — and every file in it is opened relative to the
//! handle, again without following a link, and checked after opening (a regular file of this user's with one
//! link). Checking the path and then using it would leave a gap in which the path could be swapped; the handle
//! closes it.
//!
//! This module knows nothing of sockets, logs or tokens; the daemon, the client and `exec` use it.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::config::current_uid;

/// How strictly a directory's mode is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// A directory pachagent names and makes for itself (`pachagent`, `pachagent-<uid>`): exactly 0700, and
    /// tightened to that when it is this user's and looser.
    Own,
    /// A directory the user named (the parent of `--socket ~/agent.sock`): this user's, and writable by nobody
    /// else; its other bits are the user's business.
    Chosen,
}

impl Strictness {
    /// [`Strictness::Own`] for the directories pachagent names for itself (their names begin with `pachagent`),
    /// [`Strictness::Chosen`] for any other.
    pub fn for_dir(dir: &Path) -> Self {
        match dir.file_name().and_then(|n| n.to_str()) {
            Some(name) if name.starts_with("pachagent") => Strictness::Own,
            _ => Strictness::Chosen,
        }
    }
}

/// Why a directory or a file in it cannot be trusted or used. Every message names the path and the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The path is a symbolic link or something else that is not a directory.
    #[error(
        "{} is {what}, not a directory: someone may have planted it; remove it (or choose another path) and try \
         again",
        path.display()
    )]
    NotADirectory {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        what: &'static str,
    },
    /// The directory belongs to someone else.
    #[error(
        "{} belongs to uid {owner}, not to you (uid {uid}): another user may have made it to intercept the \
         agent; remove it (or choose another path with --socket or PACHAGENT_SOCKET) and try again",
        path.display()
    )]
    Foreign {
        /// The path.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// This user.
        uid: u32,
    },
    /// Others can write to the directory, so they could replace what is in it.
    #[error(
        "{} can be written by other users (mode {mode:o}), so they could replace what pachagent keeps there: \
         chmod 700 {}, or choose another path",
        path.display(),
        path.display()
    )]
    OpenToOthers {
        /// The path.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// A file in the directory is a link, a directory, another user's, or has other names.
    #[error("{} is {what}, not a file pachagent made: someone may have planted it; remove it and try again", path.display())]
    Planted {
        /// The file.
        path: PathBuf,
        /// What it is.
        what: String,
    },
    /// The operating system refused.
    #[error("cannot use {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// How a file in a [`PrivateDir`] is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// Read and write, created (0600) when missing, never truncated: a lock file.
    ReadWrite,
    /// Appended to, created (0600) when missing: a log.
    Append,
}

/// What a name in a [`PrivateDir`] is, without following a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Its type.
    pub file_type: FileType,
    /// Its owner.
    pub uid: u32,
}

/// An open, checked directory: this user's, not writable by others.
#[derive(Debug)]
pub struct PrivateDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl PrivateDir {
    /// Opens `path` and checks it; with `create`, makes it (0700) first when it is missing, with any missing
    /// parents (0700 too).
    ///
    /// # Errors
    /// [`Error::NotADirectory`] for a link or a file, [`Error::Foreign`] for another user's directory,
    /// [`Error::OpenToOthers`] for one others can write to (of [`Strictness::Chosen`]), [`Error::Io`] otherwise.
    pub fn open(path: &Path, strictness: Strictness, create: bool) -> Result<Self, Error> {
        let io_err = |source: io::Error| Error::Io { path: path.to_owned(), source };
        if create {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
                std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
                    .create(parent)
                    .map_err(io_err)?;
            }
            match rustix::fs::mkdir(path, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(io_err(e.into())),
            }
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = match rustix::fs::open(path, flags, Mode::empty()) {
            Ok(fd) => fd,
            // With O_DIRECTORY a link is ENOTDIR rather than ELOOP: ask what the name is, without following it.
            Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
                let link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
                let what = if link { "a symbolic link" } else { "a file" };
                return Err(Error::NotADirectory { path: path.to_owned(), what });
            }
            Err(e) => return Err(io_err(e.into())),
        };
        let stat = rustix::fs::fstat(&fd).map_err(|e| io_err(e.into()))?;
        let uid = current_uid();
        if stat.st_uid != uid {
            return Err(Error::Foreign { path: path.to_owned(), owner: stat.st_uid, uid });
        }
        let mode = stat.st_mode & 0o7777;
        match strictness {
            Strictness::Own if mode != 0o700 => {
                // Ours, so ours to tighten; through the handle, so it is this directory that gets tightened.
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700)).map_err(|e| io_err(e.into()))?;
            }
            Strictness::Chosen if mode & 0o022 != 0 => {
                return Err(Error::OpenToOthers { path: path.to_owned(), mode });
            }
            _ => {}
        }
        Ok(Self { fd, path: path.to_owned() })
    }

    /// The directory's path, as it was opened.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens (or creates, 0600) the file `name` in this directory, without following a link, and checks that
    /// what was opened is a regular file of this user's with no other name; a looser mode is made 0600.
    ///
    /// # Errors
    /// [`Error::Planted`] for a link, a directory, another user's file or one with other hard links;
    /// [`Error::Io`] otherwise.
    pub fn open_file(&self, name: impl AsRef<OsStr>, how: Open) -> Result<File, Error> {
        let name = name.as_ref();
        let path = self.path.join(name);
        let base = OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
        let flags = match how {
            Open::ReadWrite => base | OFlags::RDWR,
            Open::Append => base | OFlags::WRONLY | OFlags::APPEND,
        };
        let fd = match rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::LOOP) => {
                return Err(Error::Planted { path, what: "a symbolic link".into() });
            }
            Err(rustix::io::Errno::ISDIR) => return Err(Error::Planted { path, what: "a directory".into() }),
            Err(e) => return Err(Error::Io { path, source: e.into() }),
        };
        let stat = rustix::fs::fstat(&fd).map_err(|e| Error::Io { path: path.clone(), source: e.into() })?;
        let file_type = FileType::from_raw_mode(stat.st_mode);
        if file_type != FileType::RegularFile {
            return Err(Error::Planted { path, what: format!("a {file_type:?}") });
        }
        if stat.st_uid != current_uid() {
            return Err(Error::Planted { path, what: format!("a file of uid {}", stat.st_uid) });
        }
        if stat.st_nlink != 1 {
            return Err(Error::Planted { path, what: format!("a file with {} names (hard links)", stat.st_nlink) });
        }
        if stat.st_mode & 0o077 != 0 {
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o600)).map_err(|e| Error::Io { path, source: e.into() })?;
        }
        Ok(File::from(fd))
    }

    /// What `name` is in this directory (a link is reported as a link); `None` when there is nothing.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn entry(&self, name: impl AsRef<OsStr>) -> Result<Option<Entry>, Error> {
        let name = name.as_ref();
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(Some(Entry { file_type: FileType::from_raw_mode(stat.st_mode), uid: stat.st_uid })),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(Error::Io { path: self.path.join(name), source: e.into() }),
        }
    }

    /// Removes the name `name` from this directory (never anything it may point to).
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn remove(&self, name: impl AsRef<OsStr>) -> Result<(), Error> {
        let name = name.as_ref();
        rustix::fs::unlinkat(&self.fd, name, AtFlags::empty())
            .map_err(|e| Error::Io { path: self.path.join(name), source: e.into() })
    }

    /// Sets the mode of `name`, a file this directory holds (checked by the caller).
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn set_mode(&self, name: impl AsRef<OsStr>, mode: u32) -> Result<(), Error> {
        let name = name.as_ref();
        rustix::fs::chmodat(&self.fd, name, Mode::from_raw_mode(mode), AtFlags::empty())
            .map_err(|e| Error::Io { path: self.path.join(name), source: e.into() })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_missing_directory_is_made_owner_only_with_its_parents() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run").join("pachagent");
        let opened = PrivateDir::open(&dir, Strictness::Own, true).unwrap();
        assert_eq!(opened.path(), dir);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&tmp.path().join("run")), 0o700);
    }

    #[test]
    fn a_loose_directory_of_pachagents_own_is_tightened_and_a_chosen_one_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let own = tmp.path().join("pachagent-7");
        std::fs::create_dir(&own).unwrap();
        std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o1777)).unwrap();
        PrivateDir::open(&own, Strictness::for_dir(&own), false).unwrap();
        assert_eq!(mode(&own), 0o700);
        let chosen = tmp.path().join("shared");
        std::fs::create_dir(&chosen).unwrap();
        std::fs::set_permissions(&chosen, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = PrivateDir::open(&chosen, Strictness::for_dir(&chosen), false).unwrap_err();
        assert!(matches!(err, Error::OpenToOthers { mode: 0o777, .. }), "{err:?}");
        assert!(err.to_string().contains("chmod 700"), "{err}");
        std::fs::set_permissions(&chosen, std::fs::Permissions::from_mode(0o755)).unwrap();
        PrivateDir::open(&chosen, Strictness::Chosen, false).unwrap();
    }

    #[test]
    fn a_link_where_the_directory_should_be_is_refused_and_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("elsewhere");
        std::fs::create_dir(&real).unwrap();
        let link = tmp.path().join("pachagent-7");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = PrivateDir::open(&link, Strictness::Own, true).unwrap_err();
        assert!(matches!(err, Error::NotADirectory { what: "a symbolic link", .. }), "{err:?}");
        assert_ne!(mode(&real), 0o700, "the link's target was not touched");
    }

    #[test]
    fn files_are_opened_without_following_links_and_checked_after_opening() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = PrivateDir::open(&tmp.path().join("pachagent"), Strictness::Own, true).unwrap();
        let victim = tmp.path().join("precious");
        std::fs::write(&victim, "keep me").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("agent.log")).unwrap();
        let err = dir.open_file("agent.log", Open::Append).unwrap_err();
        assert!(matches!(err, Error::Planted { .. }), "{err:?}");
        std::fs::hard_link(&victim, dir.path().join("agent.sock.lock")).unwrap();
        let err = dir.open_file("agent.sock.lock", Open::ReadWrite).unwrap_err();
        assert!(err.to_string().contains("2 names"), "{err}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");

        std::fs::write(dir.path().join("loose"), "").unwrap();
        std::fs::set_permissions(dir.path().join("loose"), std::fs::Permissions::from_mode(0o644)).unwrap();
        dir.open_file("loose", Open::ReadWrite).unwrap();
        assert_eq!(mode(&dir.path().join("loose")), 0o600);
        let fresh = dir.open_file("fresh", Open::Append).unwrap();
        drop(fresh);
        assert_eq!(mode(&dir.path().join("fresh")), 0o600);
        assert_eq!(dir.entry("fresh").unwrap().map(|e| e.file_type), Some(FileType::RegularFile));
        assert_eq!(dir.entry("agent.log").unwrap().map(|e| e.file_type), Some(FileType::Symlink));
        dir.remove("agent.log").unwrap();
        assert_eq!(dir.entry("agent.log").unwrap(), None);
        assert!(victim.exists(), "removing the link left its target alone");
    }
}
