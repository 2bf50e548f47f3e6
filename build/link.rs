//! How the programs are linked on glibc Linux, where it makes them start faster and hold less memory: packed
//! relative relocations ([`packs_relative_relocs`]), gcc's unwinder built in rather than loaded
//! ([`builds_the_unwinder_in`]), and the front, `pachagent`, static ([`static_front`]). Each is used only when a
//! probe program links (and, for the static front, runs) with it, so another toolchain or C library gets the
//! ordinary link.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// gcc's unwinder, linked whole: see [`builds_the_unwinder_in`].
const UNWINDER: [&str; 3] = ["-Wl,--whole-archive", "-lgcc_eh", "-Wl,--no-whole-archive"];

/// Emits the link arguments for this build's programs.
pub fn programs() {
    for var in ["PACHAGENT_NO_RELR", "PACHAGENT_DYNAMIC_FRONT", "CC", "RUSTC_LINKER"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if !native_gnu_linux() {
        return;
    }
    let glibc = glibc_version();
    let mut every = Vec::new();
    if packs_relative_relocs(glibc) {
        every.push("-Wl,-z,pack-relative-relocs".to_owned());
    }
    let unwinder_in = builds_the_unwinder_in();
    if unwinder_in {
        every.extend(UNWINDER.map(str::to_owned));
    }
    for flag in &every {
        println!("cargo:rustc-link-arg-bins={flag}");
    }
    for flag in static_front(glibc, &every, unwinder_in).unwrap_or_default() {
        println!("cargo:rustc-link-arg-bin=pachagent={flag}");
    }
}

/// Whether this build is for glibc Linux on the machine that builds it (probes can run, and the archives the C
/// compiler finds are the target's).
fn native_gnu_linux() -> bool {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu" && var("TARGET") == var("HOST")
}

fn out_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default())
}

/// Whether to link with `-z pack-relative-relocs` (DT_RELR). A position-independent executable carries a
/// relocation entry per pointer in its read-only data (vtables, string tables); the dynamic loader reads the whole
/// table at start, and those pages then count in the agent's resident memory for as long as it runs. Packed, the
/// table is ~40 times smaller (370 KB -> 9 KB here), which lowers the agent's idle RSS. The flag needs GNU ld 2.38
/// or lld to link and glibc 2.36 to run, so it is used only when this machine builds for itself and has both;
/// `PACHAGENT_NO_RELR=1` turns it off (e.g. to build for an older glibc).
fn packs_relative_relocs(glibc: Option<(u32, u32)>) -> bool {
    if std::env::var_os("PACHAGENT_NO_RELR").is_some_and(|v| v == "1") {
        return false;
    }
    // Older GNU ld only warns that it ignores the flag: the probe must link silently.
    glibc.is_some_and(|v| v >= (2, 36)) && c_links_cleanly("relr-probe", &["-Wl,-z,pack-relative-relocs"])
}

/// Whether to link gcc's unwinder (`libgcc_eh.a`, whole) into the programs instead of loading `libgcc_s.so`: rustc
/// names `libgcc_s` for std's panics and backtraces, and loading a second shared library is a good part of what
/// starting a small program costs (a hello-world, in one run: 1015 us loading it, 881 us with it built in, 711 us
/// fully static), and its pages count in the resident agent's memory. The objects' definitions take precedence
/// over the shared library's, so with `--as-needed` `libgcc_s` is not needed at all (`ldd`). Panics unwind and
/// backtraces print as before: the same unwinder, in the executable.
fn builds_the_unwinder_in() -> bool {
    c_links_cleanly("unwinder-probe", &UNWINDER)
}

/// The link arguments that make the front (`pachagent`, which scripts run once per token) a static
/// position-independent executable, as `-C target-feature=+crt-static` would: no dynamic loader, no shared
/// libraries to map and relocate at each start (a hello-world: 1015 -> 711 us a run; for the front, see the README's
/// Performance section). The other programs stay dynamic: the agent's helpers resolve host names, which static
/// glibc can only do by loading the system's NSS modules, of the very glibc version it was built with, at run time.
///
/// Cargo applies target features to every crate of a build, proc macros included, so the flag cannot be given to
/// one program; but only the final link depends on it. rustc asks the linker for `-lgcc_s -lc -lm` (and the
/// libraries glibc 2.34 folded into libc) as shared libraries; here each of those names is a linker script in a
/// directory searched first, naming the static archives instead (`libgcc_s` is gcc's unwinder and runtime,
/// `libgcc_eh.a` and `libgcc.a`), and `-static-pie` has the compiler driver link the static start files. A Rust
/// probe, linked by rustc with every flag the programs get (`every`) and these, must come out without a program
/// interpreter, catch a panic and exit cleanly. `None` elsewhere: glibc before 2.34, a missing archive (`libc.a`
/// is packaged apart on some distributions), sanitizers, `PACHAGENT_DYNAMIC_FRONT=1`; the front is then linked
/// like the other programs. With the unwinder already linked whole (`unwinder_in`), the scripts leave it out.
fn static_front(glibc: Option<(u32, u32)>, every: &[String], unwinder_in: bool) -> Option<Vec<String>> {
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let already_static = var("CARGO_CFG_TARGET_FEATURE").split(',').any(|f| f == "crt-static");
    if var("PACHAGENT_DYNAMIC_FRONT") == "1" || already_static || !var("CARGO_CFG_SANITIZE").is_empty() {
        return None;
    }
    if glibc.is_none_or(|v| v < (2, 34)) {
        return None;
    }
    let shims = out_dir().join("static-front");
    write_static_shims(&shims, unwinder_in)?;
    let flags = vec!["-static-pie".to_owned(), format!("-L{}", shims.display())];
    let probe_flags: Vec<&str> = every.iter().chain(&flags).map(String::as_str).collect();
    rust_probe_is_static(&probe_flags).then_some(flags)
}

/// The libraries rustc names for a glibc program, each with the static archives that stand in for it.
const STATIC_SHIMS: &[(&str, &[&str])] = &[
    ("gcc_s", &["libgcc_eh.a", "libgcc.a"]),
    ("util", &["libutil.a"]),
    ("rt", &["librt.a"]),
    ("pthread", &["libpthread.a"]),
    ("m", &["libm.a"]),
    ("dl", &["libdl.a"]),
    ("c", &["libc.a", "libgcc.a", "libgcc_eh.a"]),
];

/// Writes `lib<name>.so` linker scripts for [`STATIC_SHIMS`] into `dir`, without `libgcc_eh.a` when the unwinder
/// is linked whole anyway (twice would define its symbols twice); `None` when an archive is not installed. An
/// archive that moves (a compiler upgrade) runs this again.
fn write_static_shims(dir: &Path, unwinder_in: bool) -> Option<()> {
    std::fs::create_dir_all(dir).ok()?;
    for (name, archives) in STATIC_SHIMS {
        let mut paths = Vec::new();
        for archive in archives.iter().filter(|a| !(unwinder_in && **a == "libgcc_eh.a")) {
            let path = archive_path(archive)?;
            println!("cargo:rerun-if-changed={}", path.display());
            paths.push(format!("{:?}", path.to_str()?));
        }
        let script = format!("GROUP ( {} )\n", paths.join(" "));
        std::fs::write(dir.join(format!("lib{name}.so")), script).ok()?;
    }
    Some(())
}

/// Where the C compiler finds a library archive; `None` when it does not (it then echoes the bare name).
fn archive_path(name: &str) -> Option<PathBuf> {
    let out = Command::new(c_compiler()).arg(format!("-print-file-name={name}")).output().ok()?;
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    (path.is_absolute() && path.is_file()).then_some(path)
}

/// A program for [`rust_probe_is_static`]: it must unwind a panic (the unwinder from the archives works) and exit.
const RUST_PROBE: &str = "fn main() {
    std::panic::set_hook(Box::new(|_| {}));
    let caught = std::panic::catch_unwind(|| panic!(\"probe\")).is_err();
    std::process::exit(if caught { 0 } else { 1 });
}
";

/// Whether a Rust program that rustc links with `flags` (as `-C link-arg`s, the way cargo passes a build script's
/// link arguments, with this build's own rustc flags and linker) has no program interpreter and runs.
fn rust_probe_is_static(flags: &[&str]) -> bool {
    let dir = out_dir();
    let (source, probe) = (dir.join("static-probe.rs"), dir.join("static-probe"));
    if std::fs::write(&source, RUST_PROBE).is_err() {
        return false;
    }
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let mut cmd = Command::new(rustc);
    cmd.args(["--edition=2021", "--crate-name=static_probe", "-o"]).arg(&probe).arg(&source);
    let rustflags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    cmd.args(rustflags.split('\x1f').filter(|f| !f.is_empty()));
    if let Some(linker) = std::env::var_os("RUSTC_LINKER") {
        cmd.arg("-C").arg(format!("linker={}", linker.to_string_lossy()));
    }
    for flag in flags {
        cmd.arg("-C").arg(format!("link-arg={flag}"));
    }
    let built = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    let static_elf = built && std::fs::read(&probe).is_ok_and(|elf| !has_interpreter(&elf));
    let runs = static_elf && Command::new(&probe).status().is_ok_and(|status| status.success());
    let _ = std::fs::remove_file(&probe);
    let _ = std::fs::remove_file(&source);
    runs
}

/// Whether a 64-bit little-endian ELF file has a `PT_INTERP` program header (asks for a dynamic loader); a file
/// that is not one counts as having it.
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u64 = 3;
    let word = |at: usize, len: usize| -> Option<u64> {
        let bytes = elf.get(at..at.checked_add(len)?)?;
        Some(bytes.iter().rev().fold(0, |acc, b| acc << 8 | u64::from(*b)))
    };
    let headers = || -> Option<bool> {
        if elf.get(..6)? != b"\x7fELF\x02\x01" {
            return None;
        }
        let (offset, size, count) = (word(0x20, 8)?, word(0x36, 2)?, word(0x38, 2)?);
        for i in 0..count {
            let at = usize::try_from(offset.checked_add(i.checked_mul(size)?)?).ok()?;
            if word(at, 4)? == PT_INTERP {
                return Some(true);
            }
        }
        Some(false)
    };
    headers().unwrap_or(true)
}

/// The C library's version, as `getconf GNU_LIBC_VERSION` prints it (`glibc 2.36`).
fn glibc_version() -> Option<(u32, u32)> {
    let out = Command::new("getconf").arg("GNU_LIBC_VERSION").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let (major, minor) = text.trim().strip_prefix("glibc ")?.split_once('.')?;
    let minor = minor.split(|c: char| !c.is_ascii_digit()).next()?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The C compiler the probes use: `$CC`, else `cc`, which is also what rustc links with by default.
fn c_compiler() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".to_owned())
}

/// Whether the C compiler links an empty program with `flags`, silently.
fn c_links_cleanly(name: &str, flags: &[&str]) -> bool {
    let probe = out_dir().join(name);
    let child = Command::new(c_compiler())
        .args(["-x", "c", "-", "-o"])
        .arg(&probe)
        .args(flags)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else { return false };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"int main(void) { return 0; }\n");
    }
    let linked = child.wait_with_output().is_ok_and(|out| out.status.success() && out.stderr.is_empty());
    let _ = std::fs::remove_file(&probe);
    linked
}
