//! pachctl's own config file: where it is, which contexts it names, keeping one context's `session_token` in
//! step with the agent's session (`sync_pachctl = true`), and the private file `pachagent exec` hands a command.
//!
//! pachctl owns that file and rewrites it whenever it likes, so this module changes as little as it can. It
//! parses the file into a tree that keeps key order (the `json` submodule), sets or removes one key, and writes the result
//! atomically: a 0600 temporary file in the same directory, fsync, then a rename, done only if the file still
//! holds what was read. Every other key, including ones this module does not know, is written back where it was
//! and as it was. The token goes into that file and nowhere else. Errors name the file and the fix, and never
//! contain a token. The functions block on file I/O, so async code calls them through `spawn_blocking`.
//!
//! Environment variables consulted: `PACH_CONFIG` and `HOME` (see [`config_path`]).

mod json;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use zeroize::Zeroizing;

use self::json::{Node, Object};
use crate::config::PachdAddress;
use crate::secret::PachToken;

/// Where pachctl looks when `$PACH_CONFIG` is unset, before `$HOME` (Pachyderm's container images put it there).
const CONTAINER_CONFIG: &str = "/pachctl/config.json";

/// How many times a write starts over because someone else changed the file in the meantime. An attempt takes
/// milliseconds, so this many collisions in a row means something rewrites the file in a loop.
const MAX_ATTEMPTS: usize = 5;

/// pachctl's `ContextSource.IMPORTED`: what pachctl records for contexts another tool created (its own
/// `enterprise sync-contexts` uses it for contexts made from just an address).
const SOURCE_IMPORTED: u64 = 3;

/// The one context of a config written by [`write_standalone`].
pub const EXEC_CONTEXT: &str = "pachagent";

// pachctl writes snake_case; it also reads camelCase, and an edit goes to whichever spelling the file uses.
const SESSION_TOKEN: [&str; 2] = ["session_token", "sessionToken"];
const PACHD_ADDRESS: [&str; 2] = ["pachd_address", "pachdAddress"];
const ACTIVE_CONTEXT: [&str; 2] = ["active_context", "activeContext"];

/// One writer at a time in this process (the engine may sync several contexts at once). Other processes, such
/// as pachctl itself, are caught by reading the file again just before the rename.
static WRITER: Mutex<()> = Mutex::new(());

/// Makes temporary file names unique within the process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Why pachctl's config could not be read or updated. Whenever an update fails, the file is left as it was.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// There is no file to read contexts from.
    #[error(
        "pachctl's config file {} does not exist: connect pachctl to a cluster first (pachctl connect ADDRESS), \
         or name the file with --from",
        path.display()
    )]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// The file exists but cannot be read.
    #[error("cannot read pachctl's config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The file is not JSON.
    #[error("pachctl's config file {} is not valid JSON: {message}; fix it (pachctl cannot read it either)", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where the error is (never the text around it).
        message: String,
    },
    /// A part of the file that must be an object is something else.
    #[error("pachctl's config file {}: {key} is not a JSON object; fix it (pachctl cannot read it either)", path.display())]
    Shape {
        /// The file.
        path: PathBuf,
        /// The JSON path of the part, e.g. `v2.contexts`.
        key: String,
    },
    /// The file still has pachctl 1.x's layout, which pachctl upgrades the next time it runs.
    #[error(
        "pachctl's config file {} is in pachctl's old v1 format: run any pachctl command once to upgrade it (e.g. \
         pachctl config get active-context), then try again",
        path.display()
    )]
    Legacy {
        /// The file.
        path: PathBuf,
    },
    /// pachctl's context of that name points at another cluster, which must never receive this session's token.
    #[error(
        "pachctl's context {context:?} in {} points at {theirs}, not at {ours}, so the session was not written there: \
         point it at the same cluster (pachctl config update context {context} --pachd-address {ours}) or turn \
         sync_pachctl off for this context",
        path.display()
    )]
    AddressMismatch {
        /// The file.
        path: PathBuf,
        /// The context.
        context: String,
        /// The address in pachctl's context.
        theirs: String,
        /// The agent's address for the context.
        ours: String,
    },
    /// The new file could not be written; the old one is untouched.
    #[error(
        "cannot write pachctl's config file {}: {source}; it was left as it was (check that its directory is \
         writable and the disk has room)",
        path.display()
    )]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The file changed under every attempt.
    #[error(
        "pachctl's config file {} changed {MAX_ATTEMPTS} times while pachagent was updating it, so it was left as \
         it was: find what keeps rewriting it",
        path.display()
    )]
    KeptChanging {
        /// The file.
        path: PathBuf,
    },
}

/// pachctl's config file, chosen as pachctl chooses it: `$PACH_CONFIG`, else `/pachctl/config.json` when it
/// exists, else `$HOME/.pachyderm/config.json`. An empty `$PACH_CONFIG` counts as unset.
pub fn config_path() -> PathBuf {
    if let Some(path) = std::env::var_os("PACH_CONFIG").filter(|v| !v.is_empty()) {
        return PathBuf::from(path);
    }
    let container = Path::new(CONTAINER_CONFIG);
    if container.exists() {
        return container.to_owned();
    }
    let home = std::env::var_os("HOME").filter(|v| !v.is_empty()).map(PathBuf::from).unwrap_or_default();
    home.join(".pachyderm").join("config.json")
}

/// The contexts pachctl knows, and its active one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contexts {
    /// `v2.active_context`, when it is set.
    pub active: Option<String>,
    /// Each context's name and `pachd_address` (empty when it has none), in file order.
    pub contexts: Vec<(String, String)>,
}

/// The contexts pachctl knows: (name, pachd_address), in file order.
///
/// # Errors
/// As [`read`].
pub fn read_contexts(path: &Path) -> Result<Vec<(String, String)>, Error> {
    read(path).map(|c| c.contexts)
}

/// The contexts pachctl knows and its active context. A file in the v1 format is read as pachctl would upgrade
/// it: one context named `default`.
///
/// # Errors
/// [`Error::Missing`], [`Error::Read`], [`Error::Parse`] or [`Error::Shape`].
pub fn read(path: &Path) -> Result<Contexts, Error> {
    let bytes = read_file(path)?.ok_or_else(|| Error::Missing { path: path.to_owned() })?;
    parse_contexts(path, &bytes)
}

/// [`read`] on the bytes of a config file that was read from `path` (which errors name).
///
/// # Errors
/// [`Error::Parse`] or [`Error::Shape`].
pub fn parse_contexts(path: &Path, bytes: &[u8]) -> Result<Contexts, Error> {
    let doc = parse_doc(path, bytes)?;
    let shape = |key: &str| Error::Shape { path: path.to_owned(), key: key.to_owned() };
    let root = doc.as_object().ok_or_else(|| shape("the top level"))?;
    let Some(v2) = root.get("v2") else {
        if let Some(v1) = root.get("v1") {
            let v1 = v1.as_object().ok_or_else(|| shape("v1"))?;
            let address = v1.str_of(&PACHD_ADDRESS).unwrap_or_default().to_owned();
            return Ok(Contexts { active: Some("default".into()), contexts: vec![("default".into(), address)] });
        }
        return Ok(Contexts::default());
    };
    let v2 = v2.as_object().ok_or_else(|| shape("v2"))?;
    let active = v2.str_of(&ACTIVE_CONTEXT).filter(|a| !a.is_empty()).map(str::to_owned);
    let mut contexts = Vec::new();
    if let Some(all) = v2.get("contexts") {
        for (name, ctx) in all.as_object().ok_or_else(|| shape("v2.contexts"))?.iter() {
            let ctx = ctx.as_object().ok_or_else(|| shape(&format!("v2.contexts.{name}")))?;
            contexts.push((name.to_owned(), ctx.str_of(&PACHD_ADDRESS).unwrap_or_default().to_owned()));
        }
    }
    Ok(Contexts { active, contexts })
}

/// Sets (`Some`) or removes (`None`, as `pachctl auth logout` does) the `session_token` of pachctl's context
/// `context` in the file at `path`.
///
/// Setting creates what is missing: the file (0600) and its directory (0700), `v2`, and the context, with
/// `pachd_address` and source `IMPORTED`; it also makes the context active when pachctl has no active context.
/// A context that already points at another cluster is refused, so that a token never reaches a cluster it was
/// not issued by. Removing never creates anything. Nothing is written when nothing would change.
///
/// The write is atomic (a temporary file in the same directory, 0600, fsync, rename; a symbolic link is followed
/// and its target replaced). Just before the rename the file is read again; when someone changed it meanwhile the
/// update starts over from the new content, up to five times in all. On any error the temporary file is
/// removed and the original stays as it was. The result is mode 0600.
///
/// # Errors
/// [`Error::Read`], [`Error::Parse`], [`Error::Shape`], [`Error::Legacy`], [`Error::AddressMismatch`],
/// [`Error::Write`] or [`Error::KeptChanging`].
pub fn sync_session(path: &Path, context: &str, pachd_address: &str, token: Option<&PachToken>) -> Result<(), Error> {
    sync_session_with_hook(path, context, pachd_address, token, &mut || {})
}

/// [`sync_session`], calling `before_commit` after the new file is written and before the original is read again
/// for the final check: tests use it to change the file at the worst moment.
///
/// # Errors
/// As [`sync_session`].
#[doc(hidden)]
pub fn sync_session_with_hook(
    path: &Path,
    context: &str,
    pachd_address: &str,
    token: Option<&PachToken>,
    before_commit: &mut dyn FnMut(),
) -> Result<(), Error> {
    let _one_writer = WRITER.lock().unwrap_or_else(PoisonError::into_inner);
    let target = follow_link(path);
    let token = token.filter(|t| !t.is_empty());
    for attempt in 1..=MAX_ATTEMPTS {
        let before = read_file(&target)?;
        let Some(bytes) = updated_config(&target, before.as_deref().map(Vec::as_slice), context, pachd_address, token)?
        else {
            return Ok(());
        };
        if before.is_none() {
            ensure_dir(&target)?;
        }
        let temp = TempFile::write(&target, &bytes)?;
        before_commit();
        if read_file(&target)? == before {
            return temp.commit();
        }
        tracing::debug!(file = %target.display(), attempt, "pachctl's config changed while it was being updated");
    }
    Err(Error::KeptChanging { path: target })
}

/// The content pachctl's config file should have after [`sync_session`] with these arguments, given its
/// current content `before` (`None`: no file yet); `None` when nothing would change. Pure: the file is named
/// in errors only (the fuzz target for the round trip calls this).
///
/// # Errors
/// As [`sync_session`], except the I/O ones.
pub fn updated_config(
    path: &Path,
    before: Option<&[u8]>,
    context: &str,
    pachd_address: &str,
    token: Option<&PachToken>,
) -> Result<Option<Zeroizing<Vec<u8>>>, Error> {
    let mut doc = match before {
        Some(bytes) => parse_doc(path, bytes)?,
        None => Node::Object(Object::default()),
    };
    let changed = match token.filter(|t| !t.is_empty()) {
        Some(token) => set_token(path, &mut doc, context, pachd_address, token)?,
        None => remove_token(path, &mut doc, context)?,
    };
    if !changed {
        return Ok(None);
    }
    // Go's MarshalIndent ends without a newline; a file someone gave one keeps it.
    let trailing_newline = before.is_some_and(|b| b.ends_with(b"\n"));
    json::to_pretty(&doc, trailing_newline).map(Some).map_err(|source| write_error(path, source))
}

/// Writes a new pachctl config at `path` (which must not exist) holding one active context, [`EXEC_CONTEXT`],
/// with the address, the token and, for a private CA, `server_cas` (base64 PEM, as pachctl stores it). Mode 0600.
///
/// # Errors
/// [`Error::Write`]; a partly written file is removed.
pub fn write_standalone(
    path: &Path,
    pachd_address: &str,
    token: &PachToken,
    server_cas: Option<&str>,
) -> Result<(), Error> {
    let mut ctx = Object::default();
    ctx.set("source", Node::Number(SOURCE_IMPORTED.into()));
    ctx.set("pachd_address", Node::string(canonical(pachd_address)));
    if let Some(cas) = server_cas {
        ctx.set("server_cas", Node::string(cas));
    }
    ctx.set("session_token", Node::string(token.expose_secret()));
    let mut contexts = Object::default();
    contexts.set(EXEC_CONTEXT, Node::Object(ctx));
    let mut v2 = Object::default();
    v2.set("active_context", Node::string(EXEC_CONTEXT));
    v2.set("contexts", Node::Object(contexts));
    let mut root = Object::default();
    // pachctl rewrites a config without a user id the first time it reads it; this spares it the write.
    root.set("user_id", Node::string(uuid::Uuid::new_v4().simple().to_string()));
    root.set("v2", Node::Object(v2));
    let bytes = json::to_pretty(&Node::Object(root), false).map_err(|source| write_error(path, source))?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| write_error(path, source))?;
    if let Err(source) = file.write_all(&bytes) {
        let _ = fs::remove_file(path);
        return Err(write_error(path, source));
    }
    Ok(())
}

fn set_token(path: &Path, doc: &mut Node, context: &str, address: &str, token: &PachToken) -> Result<bool, Error> {
    let shape = |key: &str| Error::Shape { path: path.to_owned(), key: key.to_owned() };
    let root = doc.as_object_mut().ok_or_else(|| shape("the top level"))?;
    if root.get("v2").is_none() && root.get("v1").is_some() {
        return Err(Error::Legacy { path: path.to_owned() });
    }
    let mut changed = false;
    let v2 = root.object_entry("v2").ok_or_else(|| shape("v2"))?;
    // pachctl refuses to run with no active context; with one, the user's choice stands.
    if v2.str_of(&ACTIVE_CONTEXT).is_none_or(str::is_empty) {
        let key = v2.key_of(&ACTIVE_CONTEXT).unwrap_or(ACTIVE_CONTEXT[0]);
        v2.set(key, Node::string(context));
        changed = true;
    }
    let contexts = v2.object_entry("contexts").ok_or_else(|| shape("v2.contexts"))?;
    if contexts.get(context).is_none() {
        let mut ctx = Object::default();
        ctx.set("source", Node::Number(SOURCE_IMPORTED.into()));
        ctx.set(PACHD_ADDRESS[0], Node::string(canonical(address)));
        contexts.set(context, Node::Object(ctx));
        changed = true;
    }
    let ctx = contexts
        .get_mut(context)
        .and_then(Node::as_object_mut)
        .ok_or_else(|| shape(&format!("v2.contexts.{context}")))?;
    match ctx.str_of(&PACHD_ADDRESS) {
        Some(theirs) if !theirs.is_empty() => {
            if !same_cluster(theirs, address) {
                return Err(Error::AddressMismatch {
                    path: path.to_owned(),
                    context: context.to_owned(),
                    theirs: theirs.to_owned(),
                    ours: canonical(address),
                });
            }
        }
        _ => {
            let key = ctx.key_of(&PACHD_ADDRESS).unwrap_or(PACHD_ADDRESS[0]);
            ctx.set(key, Node::string(canonical(address)));
            changed = true;
        }
    }
    let key = ctx.key_of(&SESSION_TOKEN).unwrap_or(SESSION_TOKEN[0]);
    if ctx.get(key).and_then(Node::as_str) != Some(token.expose_secret()) {
        ctx.set(key, Node::string(token.expose_secret()));
        changed = true;
    }
    Ok(changed)
}

fn remove_token(path: &Path, doc: &mut Node, context: &str) -> Result<bool, Error> {
    let shape = |key: &str| Error::Shape { path: path.to_owned(), key: key.to_owned() };
    let root = doc.as_object_mut().ok_or_else(|| shape("the top level"))?;
    let Some(v2) = root.get_mut("v2") else { return Ok(false) };
    let v2 = v2.as_object_mut().ok_or_else(|| shape("v2"))?;
    let Some(contexts) = v2.get_mut("contexts") else { return Ok(false) };
    let contexts = contexts.as_object_mut().ok_or_else(|| shape("v2.contexts"))?;
    let Some(ctx) = contexts.get_mut(context) else { return Ok(false) };
    let ctx = ctx.as_object_mut().ok_or_else(|| shape(&format!("v2.contexts.{context}")))?;
    // Both spellings go: either one would keep pachctl logged in.
    let removed = ctx.remove(SESSION_TOKEN[0]) | ctx.remove(SESSION_TOKEN[1]);
    Ok(removed)
}

/// Whether two addresses name the same pachd, compared as pachctl would parse them.
fn same_cluster(a: &str, b: &str) -> bool {
    match (PachdAddress::parse(a), PachdAddress::parse(b)) {
        (Ok(a), Ok(b)) => a.tls == b.tls && a.port == b.port && a.host.eq_ignore_ascii_case(&b.host),
        _ => a.trim() == b.trim(),
    }
}

/// pachctl's qualified form (`grpc://host:port`), which pachctl would otherwise rewrite the file to get.
fn canonical(address: &str) -> String {
    PachdAddress::parse(address).map_or_else(|_| address.to_owned(), |a| a.to_string())
}

fn read_file(path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, Error> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(Zeroizing::new(bytes))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Read { path: path.to_owned(), source }),
    }
}

/// The document, which must be an object; an empty file is an empty document (pachctl reads it as one too).
fn parse_doc(path: &Path, bytes: &[u8]) -> Result<Node, Error> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Node::Object(Object::default()));
    }
    let doc = json::parse(bytes).map_err(|e| Error::Parse { path: path.to_owned(), message: e.to_string() })?;
    if doc.as_object().is_none() {
        return Err(Error::Shape { path: path.to_owned(), key: "the top level".into() });
    }
    Ok(doc)
}

/// A symbolic link's target (people keep dotfiles in a repository), so that the rename replaces the file and
/// not the link. A dangling link is replaced like a missing file.
fn follow_link(path: &Path) -> PathBuf {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => fs::canonicalize(path).unwrap_or_else(|_| path.to_owned()),
        _ => path.to_owned(),
    }
}

fn parent_dir(path: &Path) -> &Path {
    path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Creates the file's missing directories owner-only: the file holds a token, and nothing else needs to list
/// them (pachctl makes `~/.pachyderm` 0755 but works in a 0700 one).
fn ensure_dir(path: &Path) -> Result<(), Error> {
    let dir = parent_dir(path);
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|source| write_error(path, source))
}

fn write_error(path: &Path, source: io::Error) -> Error {
    Error::Write { path: path.to_owned(), source }
}

/// A fully written and synced temporary file next to its target, removed on drop unless renamed over it.
struct TempFile {
    path: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl TempFile {
    fn write(target: &Path, bytes: &[u8]) -> Result<Self, Error> {
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = parent_dir(target).join(format!(".{name}.pachagent-{}-{n}.tmp", std::process::id()));
        let werr = |source| write_error(target, source);
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(werr)?;
        // From here on, dropping `temp` removes the file.
        let temp = Self { path, target: target.to_owned(), committed: false };
        // The umask may have taken bits away at creation; the mode must be exactly 0600 whatever it was.
        file.set_permissions(fs::Permissions::from_mode(0o600)).map_err(werr)?;
        file.write_all(bytes).map_err(werr)?;
        file.sync_all().map_err(werr)?;
        Ok(temp)
    }

    fn commit(mut self) -> Result<(), Error> {
        fs::rename(&self.path, &self.target).map_err(|source| write_error(&self.target, source))?;
        self.committed = true;
        // Makes the rename durable. The new file is in place either way, so a failure here is not an error.
        if let Ok(dir) = File::open(parent_dir(&self.target)) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.path);
        }
    }
}
