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
    assert_eq!(cli.globals.context.as_deref(), Some("prod"));
    assert!(cli.globals.json);
    assert_eq!(cli.globals.socket.as_deref(), Some(std::ffi::OsStr::new("/tmp/s")));
    assert!(!cli.runs_services());
}

#[test]
fn only_dev_asks_for_a_multi_threaded_runtime() {
    assert!(parse(&["dev"]).unwrap().runs_services());
    assert!(!parse(&["status"]).unwrap().runs_services());
}

/// `pachagent serve` becomes `pachagentd serve` with the same arguments: the agent's parser reads every line the
/// CLI accepts for `serve`, and refuses what the CLI refuses.
#[test]
fn the_agent_reads_serve_lines_as_the_cli_does() {
    let agent =
        |args: &[&str]| agent::AgentCli::try_parse_from(std::iter::once("pachagent").chain(args.iter().copied()));
    for args in [
        &["serve"][..],
        &["serve", "--log-format", "json"],
        &["--socket", "/s", "serve", "--idle-exit", "10m", "--config", "/c"],
        &["serve", "--json", "--context", "x"],
    ] {
        assert!(parse(args).is_ok() && agent(args).is_ok(), "{args:?}");
    }
    for args in [&["serve", "--idle-exit", "0s"][..], &["serve", "--log-format", "xml"], &["serve", "extra"]] {
        assert!(parse(args).is_err() && agent(args).is_err(), "{args:?}");
    }
    agent::AgentCli::command().debug_assert();
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
        "--redirect-port",
        "8766",
        "--redirect-host",
        "localhost",
        "--issuer-url",
        "http://dex.local:5556/",
        "--issuer-ca-file",
        "/etc/ca.pem",
        "--client-secret-stdin",
    ])
    .unwrap();
    let Command::Context(ContextCommand::Add(args)) = cli.command else { panic!("not context add") };
    assert_eq!(args.scopes, ["groups", "email"]);
    assert_eq!(args.method, Some(MethodArg::Oidc));
    assert_eq!(args.redirect_ports, [8765, 8766]);
    assert_eq!(args.redirect_host, Some(RedirectHostArg::Localhost));
    assert_eq!(args.issuer_url.as_deref(), Some("http://dex.local:5556/"));
    assert_eq!(args.issuer_ca_file.as_deref(), Some(std::path::Path::new("/etc/ca.pem")));
    assert!(args.client_secret_stdin);
    assert!(parse(&["context", "add", "x", "--pachd", "p", "--redirect-port", "0"]).is_err());
}

#[test]
fn context_add_spells_hosts_and_methods_as_the_config_file_does() {
    let host = |h: &str| parse(&["context", "add", "x", "--pachd", "p", "--redirect-host", h]);
    let Command::Context(ContextCommand::Add(args)) = host("127.0.0.1").unwrap().command else { panic!() };
    assert_eq!(args.redirect_host, Some(RedirectHostArg::Loopback));
    assert!(host("0.0.0.0").is_err());
    let Command::Context(ContextCommand::Add(args)) =
        parse(&["context", "add", "x", "--pachd", "p", "--method", "device"]).unwrap().command
    else {
        panic!()
    };
    assert_eq!(args.method, Some(MethodArg::Device));
}

#[test]
fn a_client_secret_needs_a_client_id() {
    let err = parse(&["context", "add", "x", "--pachd", "p", "--client-secret-stdin"]).unwrap_err();
    assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
}

#[test]
fn login_flags_for_interactive_logins() {
    let cli = parse(&["login", "--device", "--no-browser", "--timeout", "10m"]).unwrap();
    let Command::Login(args) = cli.command else { panic!("not login") };
    assert!(args.device && args.no_browser && !args.force);
    assert_eq!(args.timeout, Duration::from_secs(600));
    let Command::Login(args) = parse(&["login"]).unwrap().command else { panic!("not login") };
    assert_eq!(args.timeout, Duration::from_secs(300));
}

#[test]
fn login_timeout_must_be_reasonable() {
    for bad in ["0s", "500ms", "61m", "soon"] {
        let err = parse(&["login", "--timeout", bad]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
    }
}

#[test]
fn token_flags_do_not_mix_with_interactive_ones() {
    for (a, b) in [("--token-stdin", "--device"), ("--id-token-stdin", "--no-browser")] {
        let err = parse(&["login", a, b]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict, "{a} {b}");
    }
}

#[test]
fn help_documents_the_exit_codes_and_environment() {
    let help = Cli::command().render_long_help().to_string();
    for needle in ["Exit codes:", "130", "PACHAGENT_SOCKET", "PACHAGENT_CONFIG", "PACHAGENT_CONTEXT", "pachagent serve"]
    {
        assert!(help.contains(needle), "{needle} missing from:\n{help}");
    }
}
