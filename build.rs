//! Compiles the protos with tonic/prost codegen. `protoc` comes from the `protoc-bin-vendored` crate so that a machine
//! with only Rust builds the crate; setting `PROTOC` (and optionally `PROTOC_INCLUDE`) uses another one instead.
//!
//! On glibc Linux it also links the binaries with packed relative relocations when the toolchain and the C library
//! support them (see [`pack_relative_relocs`]).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    pack_relative_relocs();
    println!("cargo:rerun-if-env-changed=PROTOC");
    println!("cargo:rerun-if-env-changed=PROTOC_INCLUDE");

    let mut includes = vec![PathBuf::from("proto")];
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // prost-build reads PROTOC from the environment of the build script.
        unsafe_set_env("PROTOC", &protoc);
        includes.push(protoc_bin_vendored::include_path()?);
    } else if let Some(inc) = std::env::var_os("PROTOC_INCLUDE") {
        includes.push(PathBuf::from(inc));
    }

    // Messages that carry tokens get a hand-written, redacting `Debug` in `src/proto.rs`.
    tonic_prost_build::configure()
        .skip_debug(["pachagent.v1.LoginRequest", "pachagent.v1.GetTokenResponse"])
        .compile_protos(&[PathBuf::from("proto/pachagent/v1/agent.proto")], &includes)?;

    tonic_prost_build::configure()
        .skip_debug([
            "auth_v2.ActivateRequest",
            "auth_v2.ActivateResponse",
            "auth_v2.AuthenticateRequest",
            "auth_v2.AuthenticateResponse",
            "auth_v2.RevokeAuthTokenRequest",
            "auth_v2.GetRobotTokenResponse",
        ])
        .compile_protos(&[PathBuf::from("proto/pachyderm/auth_v2/auth.proto")], &includes)?;

    // Between the agent and its keyring helper: no service; the two messages that carry secrets get a redacting
    // `Debug`.
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .skip_debug(["pachagent.keyring.v1.Set", "pachagent.keyring.v1.Found"])
        .compile_protos(&[PathBuf::from("proto/pachagent/keyring/v1/helper.proto")], &includes)?;

    // Between the agent and its network helper: tokens in many messages, none of which has a `Debug` that could
    // print one (the agent never logs these messages; the types it keeps them in redact).
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .skip_debug([".pachagent.net.v1"])
        .compile_protos(&[PathBuf::from("proto/pachagent/net/v1/helper.proto")], &includes)?;
    Ok(())
}

/// Links the binaries with `-z pack-relative-relocs` (DT_RELR) where it works. A position-independent executable
/// carries a relocation entry per pointer in its read-only data (vtables, string tables); the dynamic loader reads the
/// whole table at start, and those pages then count in the agent's resident memory for as long as it runs. Packed,
/// the table is ~40 times smaller (370 KB -> 9 KB here), which lowers the agent's idle RSS. The flag needs GNU ld
/// 2.38 or lld to link and glibc 2.36 to run, so it is used only when this machine builds for itself and has both;
/// `PACHAGENT_NO_RELR=1` turns it off (e.g. to build for an older glibc).
fn pack_relative_relocs() {
    println!("cargo:rerun-if-env-changed=PACHAGENT_NO_RELR");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let native_gnu_linux =
        var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu" && var("TARGET") == var("HOST");
    if !native_gnu_linux || var("PACHAGENT_NO_RELR") == "1" {
        return;
    }
    if glibc_version().is_some_and(|v| v >= (2, 36)) && linker_packs_relocs(Path::new(&var("OUT_DIR"))) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
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
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let probe = out_dir.join("relr-probe");
    let child = Command::new(cc)
        .args(["-x", "c", "-", "-o"])
        .arg(&probe)
        .arg("-Wl,-z,pack-relative-relocs")
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

#[allow(unsafe_code)]
fn unsafe_set_env(key: &str, value: &std::path::Path) {
    // SAFETY: a build script runs on one thread; nothing reads the environment concurrently.
    unsafe { std::env::set_var(key, value) };
}
