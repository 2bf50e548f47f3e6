use std::ffi::OsString;
use std::time::Duration;

use clap::Parser;

use super::super::{Cli, Command};
use super::*;

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// What the full command line makes of `args`, in the quick path's terms; `None` when it is not a plain `token`
/// or `whoami` (or does not parse).
fn full(args: &[&str]) -> Option<(GlobalArgs, QuickCommand)> {
    let cli = Cli::try_parse_from(std::iter::once("pachagent").chain(args.iter().copied())).ok()?;
    let command = match cli.command {
        Command::Token(t) => QuickCommand::Token { min_valid: t.min_valid },
        Command::Whoami(w) => QuickCommand::WhoAmI { verify: w.verify },
        _ => return None,
    };
    Some((cli.globals, command))
}

fn same_globals(a: &GlobalArgs, b: &GlobalArgs) -> bool {
    a.socket == b.socket && a.config == b.config && a.context == b.context && a.json == b.json
}

/// The command lines scripts write: each is answered by the front, and means exactly what the full definition
/// says it means.
#[test]
fn plain_token_and_whoami_lines_are_answered_by_the_front_as_the_full_cli_reads_them() {
    for args in [
        &["token"][..],
        &["whoami"],
        &["token", "--min-valid", "10m"],
        &["token", "--min-valid=1h 30m", "--json"],
        &["--context", "prod", "token"],
        &["token", "--context=prod", "--socket", "/run/s", "--config", "/c.toml"],
        &["--json", "whoami", "--verify"],
        &["whoami", "--verify", "--context", "dev"],
    ] {
        let Route::Quick(quick) = route(&os(args)) else { panic!("{args:?} was not answered by the front") };
        let (globals, command) = full(args).unwrap_or_else(|| panic!("the full CLI does not read {args:?}"));
        assert_eq!(quick.command, command, "{args:?}");
        assert!(same_globals(&quick.globals, &globals), "{args:?}: {:?} vs {globals:?}", quick.globals);
    }
}

/// Help, mistakes and every other command reach the full command line, which explains them.
#[test]
fn anything_else_goes_to_the_full_cli_and_serve_to_the_agent() {
    for args in [
        &[][..],
        &["--help"],
        &["token", "--help"],
        &["token", "-h"],
        &["--version"],
        &["status"],
        &["login"],
        &["token", "--min-valid", "soon"],
        &["token", "--min-valid"],
        &["token", "--min-valid", "1m", "--min-valid", "2m"],
        &["token", "--verify"],
        &["whoami", "--min-valid", "1m"],
        &["whoami", "--verify=yes"],
        &["--json", "--json", "token"],
        &["token", "--context"],
        &["token", "--context", "--json"],
        &["token", "--context="],
        &["token", "extra"],
        &["--min-valid", "1m", "token"],
        &["tokne"],
        &["token", "--", "x"],
    ] {
        assert!(matches!(route(&os(args)), Route::Cli), "{args:?} should go to pachagent-cli");
    }
    assert!(matches!(route(&os(&["serve"])), Route::Agent));
    assert!(matches!(route(&os(&["--socket", "/s", "serve", "--idle-exit", "5m"])), Route::Agent));
}

/// Whatever goes to the full CLI because the front would not answer it is either a usage error there or a
/// command the front does not answer: the front never refuses a line the full CLI accepts as token or whoami,
/// except for these forms (empty values, values that start with '-').
#[test]
fn every_line_the_full_cli_reads_as_a_plain_token_or_whoami_is_answered_by_the_front() {
    for args in [&["token", "--min-valid", "90s"][..], &["whoami", "--json"], &["--config", "c", "whoami"]] {
        assert!(full(args).is_some());
        assert!(matches!(route(&os(args)), Route::Quick(_)), "{args:?}");
    }
}

#[test]
fn a_min_valid_is_a_human_duration() {
    let Route::Quick(quick) = route(&os(&["token", "--min-valid", "1m30s"])) else { panic!("not quick") };
    assert_eq!(quick.command, QuickCommand::Token { min_valid: Some(Duration::from_secs(90)) });
}

/// The front knows every flag `token` and `whoami` take, by name, variable and default: a flag added to them (or
/// to the globals) in the full definition, or given a default or another variable, fails here until the front
/// reads it too.
#[test]
fn the_front_knows_every_flag_of_the_commands_it_answers() {
    use clap::CommandFactory;
    let mut cli = Cli::command();
    // Building propagates the global flags into every subcommand.
    cli.build();
    for (name, own) in [("token", &["min-valid"][..]), ("whoami", &["verify"])] {
        let sub = cli.find_subcommand(name).unwrap();
        let mut flags: Vec<(String, Option<String>, Vec<String>)> = sub
            .get_arguments()
            .filter(|a| a.get_id() != "help")
            .map(|a| {
                let long = a.get_long().unwrap_or_else(|| panic!("{name}: {} has no long name", a.get_id()));
                let defaults = a.get_default_values().iter().map(|d| d.to_string_lossy().into_owned()).collect();
                (long.to_owned(), a.get_env().map(|e| e.to_string_lossy().into_owned()), defaults)
            })
            .collect();
        flags.sort();
        // (name, variable, defaults): a switch's only default is `false`.
        let mut known: Vec<(String, Option<String>, Vec<String>)> = [
            ("config", Some("PACHAGENT_CONFIG"), None),
            ("context", Some("PACHAGENT_CONTEXT"), None),
            ("json", None, Some("false")),
            ("socket", Some("PACHAGENT_SOCKET"), None),
        ]
        .into_iter()
        .chain(own.iter().map(|f| (*f, None, (*f == "verify").then_some("false"))))
        .map(|(long, env, default)| {
            (long.to_owned(), env.map(str::to_owned), default.map(str::to_owned).into_iter().collect())
        })
        .collect();
        known.sort();
        assert_eq!(flags, known, "`{name}`'s flags changed: teach cli::quick::read the change");
        assert!(sub.get_positionals().next().is_none(), "`{name}` takes no positional argument");
    }
}
