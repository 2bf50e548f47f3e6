//! What a user reads when a command fails. Each common failure is produced for real (an agent on the kernel
//! keyring, pachd-dev, a revoked token, a stopped pachd, a stopped agent) and its message must name the context it
//! is about and the command to run next, a command pachagent accepts as written.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;

use support::{CliOutput, Keyring, PachdDev, TestAgent};

/// One failure: what the user ran, how it must end, and what the message must point to.
struct Case {
    situation: &'static str,
    args: &'static [&'static str],
    exit: i32,
    context: &'static str,
    next: &'static str,
}

#[track_caller]
fn check(case: &Case, out: &CliOutput) {
    let situation = case.situation;
    assert_eq!(out.code, case.exit, "{situation}: {out:#?}");
    assert!(out.stdout.is_empty(), "{situation}: errors go to stderr: {out:#?}");
    let message = out.stderr.trim_end();
    assert!(message.starts_with("pachagent: ") && !message.contains('\n'), "{situation}: one line: {message:?}");
    assert!(message.contains(case.context), "{situation}: does not name the context {:?}: {message}", case.context);
    assert!(
        message.contains(&format!("run {}", case.next)),
        "{situation}: does not say `run {}`: {message}",
        case.next
    );
    // The command exists as written: clap checks the subcommand and every flag before it reaches --help.
    let mut args: Vec<&str> = case.next.split_whitespace().skip(1).collect();
    args.push("--help");
    let help = Command::new(env!("CARGO_BIN_EXE_pachagent")).args(&args).output().unwrap();
    assert!(
        help.status.success(),
        "{situation}: `{}` is not a command pachagent accepts: {}",
        case.next,
        String::from_utf8_lossy(&help.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_common_error_names_the_context_and_a_command_pachagent_accepts() {
    let pachd = PachdDev::start(None, None);
    let mut lab_pachd = PachdDev::start(None, None);
    let mut agent = TestAgent::new(Keyring::Keyutils);
    // "dev" comes first and so is the active context; it is never logged in.
    agent.add_context("dev", &pachd.address, &[]);
    agent.add_context("prod", &pachd.address, &[]);
    agent.add_context("lab", &lab_pachd.address, &[]);
    agent.start();
    let prod = pachd.robot_token("ci", 0).await;
    agent.cli_stdin(&["login", "--context", "prod", "--token-stdin"], &format!("{prod}\n")).ok();
    pachd.revoke(&prod).await;
    let lab = lab_pachd.robot_token("ci", 0).await;
    agent.cli_stdin(&["login", "--context", "lab", "--token-stdin"], &format!("{lab}\n")).ok();
    lab_pachd.stop();

    let with_agent = [
        Case {
            situation: "an unknown context",
            args: &["whoami", "--context", "nope"],
            exit: 2,
            context: "\"nope\"",
            next: "pachagent context add nope --pachd ADDRESS",
        },
        Case {
            situation: "not logged in",
            args: &["whoami"],
            exit: 1,
            context: "\"dev\"",
            next: "pachagent login --context dev",
        },
        Case {
            situation: "not logged in, asking for a token",
            args: &["token"],
            exit: 1,
            context: "\"dev\"",
            next: "pachagent login --context dev",
        },
        Case {
            situation: "a session pachd no longer accepts (login required)",
            args: &["whoami", "--context", "prod", "--verify"],
            exit: 1,
            context: "\"prod\"",
            next: "pachagent login --context prod",
        },
        Case {
            situation: "pachd down",
            args: &["whoami", "--context", "lab", "--verify"],
            exit: 4,
            context: "\"lab\"",
            next: "pachagent doctor --context lab",
        },
    ];
    for case in &with_agent {
        check(case, &agent.cli(case.args));
    }

    agent.stop();
    let without_agent = [
        Case {
            situation: "the agent not running (the active context)",
            args: &["whoami"],
            exit: 3,
            context: "--context dev",
            next: "pachagent login --context dev",
        },
        Case {
            situation: "the agent not running (--context)",
            args: &["token", "--context", "prod"],
            exit: 3,
            context: "--context prod",
            next: "pachagent login --context prod",
        },
    ];
    for case in &without_agent {
        check(case, &agent.cli(case.args));
    }
}
