//! How the programs are linked on glibc Linux, where it makes them start faster and hold less memory: packed
//! relative relocations ([`pack_relative_relocs`]), gcc's unwinder built in rather than loaded
//! ([`link_unwinder_in`]), and the front, `pachagent`, static ([`link_front_statically`]). Each is used only when a
//! probe program links (and, for the static front, runs) with it, so another toolchain or C library gets the
//! ordinary link.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Emits the link arguments for this build's programs.
pub fn programs() {
    println!("cargo:rerun-if-env-changed=PACHAGENT_NO_RELR");
    println!("cargo:rerun-if-env-changed=PACHAGENT_DYNAMIC_FRONT");
    if !native_gnu_linux() {
        return;
    }
    pack_relative_relocs();
    let unwinder = link_unwinder_in();
    link_front_statically(&unwinder);
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

/// Links the binaries with `-z pack-relative-relocs` (DT_RELR) where it works. A position-independent executable
/// carries a relocation entry per pointer in its read-only data (vtables, string tables); the dynamic loader reads the
/// whole table at start, and those pages then count in the agent's resident memory for as long as it runs. Packed,
/// the table is ~40 times smaller (370 KB -> 9 KB here), which lowers the agent's idle RSS. The flag needs GNU ld
/// 2.38 or lld to link and glibc 2.36 to run, so it is used only when this machine builds for itself and has both;
/// `PACHAGENT_NO_RELR=1` turns it off (e.g. to build for an older glibc).
fn pack_relative_relocs() {
    if std::env::var_os("PACHAGENT_NO_RELR").is_some_and(|v| v == "1") {
        return;
    }
    if glibc_version().is_some_and(|v| v >= (2, 36)) && linker_packs_relocs(&out_dir()) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Links the binaries with gcc's unwinder (`libgcc_eh.a`, whole) instead of loading `libgcc_s.so`: rustc names
/// `libgcc_s` for std's panics and backtraces, and loading a second shared library is a good part of what starting
/// a small program costs (a hello-world, in one run: 1015 us loading it, 881 us with it built in, 711 us fully
/// static), and its pages count in the resident agent's memory. The objects' definitions take precedence over the
/// shared library's, so with `--as-needed` `libgcc_s` is not needed at all (`ldd`). Panics unwind and backtraces
/// print as before: the same unwinder, in the executable. Returns the flags given.
fn link_unwinder_in() -> Vec<&'static str> {
    let flags = vec!["-Wl,--whole-archive", "-lgcc_eh", "-Wl,--no-whole-archive"];
    if !links_cleanly(&out_dir(), "unwinder-probe", &flags) {
        return Vec::new();
    }
    for flag in &flags {
        println!("cargo:rustc-link-arg-bins={flag}");
    }
    flags
}

/// Links the front (`pachagent`, which scripts run once per token) as a static position-independent executable, as
/// `-C target-feature=+crt-static` would: no dynamic loader, no shared libraries to map and relocate at each start.
/// On a hello-world, 1015 -> 711 us a run; for the front, see the README's Performance section. The other programs
/// stay dynamic: the agent's helpers resolve host names, which static glibc can only do by loading the system's NSS
/// modules, of the very glibc version it was built with, at run time.
///
/// Cargo applies target features to every crate of a build, proc macros included, so the flag cannot be given to
/// one program; but only the final link depends on it. rustc asks the linker for `-lgcc_s -lc -lm` (and the
/// libraries glibc 2.34 folded into libc) as shared libraries; here each of those names is a linker script in a
/// directory searched first, naming the static archives instead (`libgcc_s` is gcc's unwinder and runtime,
/// `libgcc_eh.a` and `libgcc.a`), and `-static-pie` has the compiler driver link the static start files. A probe
/// program linked the same way must come out without an interpreter and run before the front is linked like it;
/// anywhere else (no `libc.a`, as on distributions that package it apart; another OS; a cross build;
/// `PACHAGENT_DYNAMIC_FRONT=1`) the front is linked like the other programs. `unwinder` is what
/// [`link_unwinder_in`] gave every program: with the unwinder already linked whole, the scripts leave it out.
fn link_front_statically(unwinder: &[&str]) {
    if std::env::var_os("PACHAGENT_DYNAMIC_FRONT").is_some_and(|v| v == "1") {
        return;
    }
    let shims = out_dir().join("static-front");
    if write_static_shims(&shims, !unwinder.is_empty()).is_none() {
        return;
    }
    let flags = ["-static-pie".to_owned(), format!("-L{}", shims.display())];
    // The probe is linked as rustc links a dynamic program (its libraries, in its order), plus these flags.
    let mut probe = vec!["-Wl,--as-needed".to_owned(), "-Wl,-Bdynamic".to_owned()];
    probe.extend(STATIC_SHIMS.iter().map(|(name, _)| format!("-l{name}")));
    probe.extend(["-pie".to_owned(), "-nodefaultlibs".to_owned()]);
    probe.extend(flags.iter().cloned());
    probe.extend(unwinder.iter().map(|flag| (*flag).to_owned()));
    let probe: Vec<&str> = probe.iter().map(String::as_str).collect();
    if links_static(&out_dir(), &probe) {
        for flag in flags {
            println!("cargo:rustc-link-arg-bin=pachagent={flag}");
        }
    }
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
/// is linked whole anyway (twice would define its symbols twice); `None` when an archive is not installed.
fn write_static_shims(dir: &Path, unwinder_linked: bool) -> Option<()> {
    std::fs::create_dir_all(dir).ok()?;
    for (name, archives) in STATIC_SHIMS {
        let mut paths = Vec::new();
        for archive in archives.iter().filter(|a| !(unwinder_linked && **a == "libgcc_eh.a")) {
            paths.push(archive_path(archive)?.display().to_string());
        }
        let script = format!("GROUP ( {} )\n", paths.join(" "));
        std::fs::write(dir.join(format!("lib{name}.so")), script).ok()?;
    }
    Some(())
}

/// Where the C compiler finds a library archive; `None` when it does not (it then echoes the bare name).
fn archive_path(name: &str) -> Option<PathBuf> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let out = Command::new(cc).arg(format!("-print-file-name={name}")).output().ok()?;
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    (path.is_absolute() && path.is_file()).then_some(path)
}

/// Whether an empty C program linked with `flags` comes out static (no program interpreter) and runs.
fn links_static(out_dir: &Path, flags: &[&str]) -> bool {
    let probe = out_dir.join("static-probe");
    if !links_cleanly_to(&probe, flags) {
        return false;
    }
    let static_elf = std::fs::read(&probe).is_ok_and(|elf| !has_interpreter(&elf));
    let runs = Command::new(&probe).status().is_ok_and(|status| status.success());
    let _ = std::fs::remove_file(&probe);
    static_elf && runs
}

/// Whether a 64-bit little-endian ELF file has a `PT_INTERP` program header (asks for a dynamic loader); a file
/// that is not one counts as having it.
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let word = |at: usize, len: usize| -> Option<u64> {
        let bytes = elf.get(at..at + len)?;
        Some(bytes.iter().rev().fold(0, |acc, b| acc << 8 | u64::from(*b)))
    };
    let headers = || -> Option<bool> {
        if elf.get(..6)? != b"\x7fELF\x02\x01" {
            return None;
        }
        let (offset, size, count) = (word(0x20, 8)?, word(0x36, 2)?, word(0x38, 2)?);
        for i in 0..count {
            let at = usize::try_from(offset + i * size).ok()?;
            if word(at, 4)? == u64::from(PT_INTERP) {
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

/// Whether the C compiler links a program with the flag cleanly: older GNU ld only warns that it ignores it.
fn linker_packs_relocs(out_dir: &Path) -> bool {
    links_cleanly(out_dir, "relr-probe", &["-Wl,-z,pack-relative-relocs"])
}

/// Whether the C compiler links an empty program with `flags`, silently.
fn links_cleanly(out_dir: &Path, name: &str, flags: &[&str]) -> bool {
    let probe = out_dir.join(name);
    let linked = links_cleanly_to(&probe, flags);
    let _ = std::fs::remove_file(&probe);
    linked
}

/// As [`links_cleanly`], leaving the program at `probe`.
fn links_cleanly_to(probe: &Path, flags: &[&str]) -> bool {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let child = Command::new(cc)
        .args(["-x", "c", "-", "-o"])
        .arg(probe)
        .args(flags)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else { return false };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"int main(void) { return 0; }\n");
    }
    child.wait_with_output().is_ok_and(|out| out.status.success() && out.stderr.is_empty())
}
