//! Compiles the protos with tonic/prost codegen. `protoc` comes from the `protoc-bin-vendored` crate so that a machine
//! with only Rust builds the crate; setting `PROTOC` (and optionally `PROTOC_INCLUDE`) uses another one instead.
//!
//! On glibc Linux it also chooses how the programs are linked (`build/link.rs`).

#[path = "build/link.rs"]
mod link;

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    link::programs();
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

#[allow(unsafe_code)]
fn unsafe_set_env(key: &str, value: &std::path::Path) {
    // SAFETY: a build script runs on one thread; nothing reads the environment concurrently.
    unsafe { std::env::set_var(key, value) };
}
