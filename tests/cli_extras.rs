//! `pachagent completions` and `pachagent man`: what a user installs into their shell and man path.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output};

fn pachagent(args: &[&str]) -> Output {
    // No agent, config or keyring is needed; pointing them at nothing proves it.
    Command::new(env!("CARGO_BIN_EXE_pachagent"))
        .args(args)
        .env("PACHAGENT_SOCKET", "/nonexistent/agent.sock")
        .env("PACHAGENT_CONFIG", "/nonexistent/config.toml")
        .output()
        .unwrap()
}

#[track_caller]
fn stdout_of(args: &[&str]) -> String {
    let out = pachagent(args);
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{args:?} wrote on stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

const SUBCOMMANDS: &[&str] =
    &["serve", "login", "logout", "whoami", "status", "token", "watch", "exec", "context", "service", "doctor"];

#[test]
fn bash_completion_defines_a_completion_function_that_knows_every_subcommand() {
    let script = stdout_of(&["completions", "bash"]);
    assert!(script.contains("complete -F _pachagent"), "{script}");
    for sub in SUBCOMMANDS {
        assert!(script.contains(sub), "bash script lacks {sub}");
    }
    assert!(script.contains("--context"), "global flags are completed too");
}

#[test]
fn zsh_completion_is_a_compdef_script_that_knows_every_subcommand() {
    let script = stdout_of(&["completions", "zsh"]);
    assert!(script.starts_with("#compdef pachagent"), "{}", &script[..script.len().min(200)]);
    for sub in SUBCOMMANDS {
        assert!(script.contains(&format!("'{sub}:")), "zsh script lacks {sub}");
    }
}

#[test]
fn fish_completion_offers_every_subcommand() {
    let script = stdout_of(&["completions", "fish"]);
    for sub in SUBCOMMANDS {
        assert!(script.contains(&format!("-a \"{sub}\"")), "fish script lacks {sub}");
    }
}

#[test]
fn an_unknown_shell_is_a_usage_error_that_lists_the_choices() {
    let out = pachagent(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bash") && err.contains("zsh") && err.contains("fish"), "{err}");
}

#[test]
fn the_man_page_is_roff_for_section_1_and_lists_the_subcommands() {
    let page = stdout_of(&["man"]);
    assert!(page.contains(".TH pachagent 1"), "{}", &page[..page.len().min(300)]);
    assert!(page.contains(".SH NAME") && page.contains(".SH SYNOPSIS") && page.contains(".SH SUBCOMMANDS"));
    for sub in SUBCOMMANDS {
        assert!(page.contains(&format!("pachagent\\-{sub}")), "man page lacks {sub}");
    }
    assert!(page.contains("Exit codes"), "the exit codes from --help are in the page");
}
