use clap::{CommandFactory, Parser};

use super::*;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("pachagent").chain(args.iter().copied()))
}

#[test]
fn the_command_line_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn global_flags_work_after_the_subcommand() {
    let cli = parse(&["whoami", "--context", "prod", "--json", "--socket", "/tmp/s"]).unwrap();
    assert_eq!(cli.context.as_deref(), Some("prod"));
    assert!(cli.json);
    assert_eq!(cli.socket.as_deref(), Some(std::ffi::OsStr::new("/tmp/s")));
    assert!(!cli.is_serve());
}

#[test]
fn only_serve_asks_for_the_agent_runtime() {
    assert!(parse(&["serve", "--log-format", "json"]).unwrap().is_serve());
    assert!(!parse(&["status"]).unwrap().is_serve());
}

#[test]
fn the_two_token_flags_exclude_each_other() {
    let err = parse(&["login", "--token-stdin", "--id-token-stdin"]).unwrap_err();
    assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    assert_eq!(err.exit_code(), i32::from(EXIT_USAGE));
}

#[test]
fn min_valid_takes_a_human_duration() {
    let cli = parse(&["token", "--min-valid", "1h 30m"]).unwrap();
    let Command::Token(args) = cli.command else { panic!("not token") };
    assert_eq!(args.min_valid, Some(Duration::from_secs(5400)));
    assert!(parse(&["token", "--min-valid", "soon"]).is_err());
}

#[test]
fn context_add_takes_repeated_scopes_and_a_method() {
    let cli = parse(&[
        "context",
        "add",
        "prod",
        "--pachd",
        "grpcs://p:443",
        "--issuer",
        "https://i/",
        "--client-id",
        "c",
        "--scope",
        "groups",
        "--scope",
        "email",
        "--method",
        "oidc",
        "--redirect-port",
        "8765",
    ])
    .unwrap();
    let Command::Context(ContextCommand::Add(args)) = cli.command else { panic!("not context add") };
    assert_eq!(args.scopes, ["groups", "email"]);
    assert_eq!(args.method, Some(MethodArg::Oidc));
    assert_eq!(args.redirect_port, Some(8765));
    assert!(parse(&["context", "add", "x", "--pachd", "p", "--redirect-port", "0"]).is_err());
}

#[test]
fn help_documents_the_exit_codes_and_environment() {
    let help = Cli::command().render_long_help().to_string();
    for needle in ["Exit codes:", "PACHAGENT_SOCKET", "PACHAGENT_CONFIG", "PACHAGENT_CONTEXT", "pachagent serve"] {
        assert!(help.contains(needle), "{needle} missing from:\n{help}");
    }
}
