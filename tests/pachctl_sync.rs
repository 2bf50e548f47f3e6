//! pachctl's config kept in step with the agent: a sync changes one key of pachctl's file and nothing else, and it
//! never loses someone else's edit, leaves a temporary file behind, or damages the original when it fails. Then
//! `pachagent context import-pachctl`, through the real binary.
//!
//! Files are real files in temporary directories. The agent's own sync is driven through a real agent, including a
//! write that fails for real (a file-size limit, as on a full disk).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use pachagent::pachctl::{self, Error};
use pachagent::secret::PachToken;

/// A config in pachctl's own layout (Go's `json.MarshalIndent(c, "", "  ")`, no final newline), with keys
/// pachagent does not know at the top level, in `v2` and in a context.
const PACHCTL_CONFIG: &str = r#"{
  "user_id": "5b1c0e3a2f9d4c7e8a6b0d1e2f3a4b5c",
  "v2": {
    "active_context": "local",
    "contexts": {
      "local": {
        "pachd_address": "grpc://localhost:80",
        "session_token": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "cluster_deployment_id": "dep-local",
        "port_forwarders": {
          "pachd": 30650
        },
        "project": "default"
      },
      "prod": {
        "source": 3,
        "pachd_address": "grpcs://pachd.example.com:443",
        "server_cas": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t",
        "session_token": "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
        "active_transaction": "",
        "from_a_newer_pachctl": {
          "list": [
            1,
            2.5,
            null,
            true
          ],
          "empty": {}
        }
      },
      "staging": {
        "pachd_address": "grpc://staging.example.com:30650"
      }
    },
    "metrics": true,
    "max_shell_completions": 64,
    "added_in_v2_later": "kept"
  },
  "top_level_unknown": {
    "b": "second",
    "a": "first"
  }
}"#;

const PROD: &str = "grpcs://pachd.example.com:443";
const OLD_PROD_TOKEN: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const NEW_TOKEN: &str = "0123456789abcdef0123456789abcdef";

fn token(value: &str) -> PachToken {
    PachToken::new(value.to_owned())
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A temporary directory holding `config.json` with `text`.
fn pachctl_dir(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    fs::write(&path, text).unwrap();
    (dir, path)
}

/// Every file name in `dir`: proof that no temporary file was left.
#[track_caller]
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

#[test]
fn a_sync_changes_only_the_contexts_session_token_and_keeps_everything_else_byte_for_byte() {
    let (dir, path) = pachctl_dir(PACHCTL_CONFIG);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    pachctl::sync_session(&path, "prod", PROD, Some(&token(NEW_TOKEN))).unwrap();

    let expected = PACHCTL_CONFIG.replace(OLD_PROD_TOKEN, NEW_TOKEN);
    assert_eq!(fs::read_to_string(&path).unwrap(), expected, "key order, unknown keys and layout are kept");
    assert_eq!(mode(&path), 0o600, "the file holds a token, so it ends up owner-only");
    assert_eq!(names_in(dir.path()), ["config.json"], "no temporary file is left");

    let before = fs::metadata(&path).unwrap().modified().unwrap();
    pachctl::sync_session(&path, "prod", PROD, Some(&token(NEW_TOKEN))).unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), expected);
    assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), before, "an unchanged token is not rewritten");
}

#[test]
fn logout_removes_the_session_token_as_pachctl_auth_logout_does_and_nothing_else() {
    let (_dir, path) = pachctl_dir(PACHCTL_CONFIG);
    pachctl::sync_session(&path, "prod", PROD, None).unwrap();
    let expected = PACHCTL_CONFIG.replace(&format!("        \"session_token\": \"{OLD_PROD_TOKEN}\",\n"), "");
    assert_ne!(expected, PACHCTL_CONFIG);
    assert_eq!(fs::read_to_string(&path).unwrap(), expected);
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn logging_out_of_a_context_pachctl_does_not_have_writes_nothing() {
    let (dir, path) = pachctl_dir(PACHCTL_CONFIG);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    pachctl::sync_session(&path, "elsewhere", PROD, None).unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), PACHCTL_CONFIG);
    assert_eq!(mode(&path), 0o644, "the file was not even rewritten");

    let missing = dir.path().join("none").join("config.json");
    pachctl::sync_session(&missing, "prod", PROD, None).unwrap();
    assert!(!missing.parent().unwrap().exists(), "a logout creates no file or directory");
}

#[test]
fn a_missing_file_is_created_owner_only_with_the_context_active() {
    let home = tempfile::tempdir().unwrap();
    let path = home.path().join(".pachyderm").join("config.json");
    pachctl::sync_session(&path, "dev", "localhost:30650", Some(&token(NEW_TOKEN))).unwrap();

    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    assert_eq!(names_in(path.parent().unwrap()), ["config.json"]);
    let written = json(&path);
    assert_eq!(written["v2"]["active_context"], "dev");
    let dev = &written["v2"]["contexts"]["dev"];
    assert_eq!(dev["pachd_address"], "grpc://localhost:30650", "written in pachctl's qualified form");
    assert_eq!(dev["session_token"], NEW_TOKEN);
    assert_eq!(dev["source"], 3, "IMPORTED: made by another tool");
}

#[test]
fn a_new_context_is_added_after_the_others_and_the_active_context_stays() {
    let (_dir, path) = pachctl_dir(PACHCTL_CONFIG);
    pachctl::sync_session(&path, "dev", "grpc://127.0.0.1:1650", Some(&token(NEW_TOKEN))).unwrap();
    let names: Vec<String> = pachctl::read_contexts(&path).unwrap().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["local", "prod", "staging", "dev"]);
    let written = json(&path);
    assert_eq!(written["v2"]["active_context"], "local", "the user's choice stands");
    assert_eq!(written["v2"]["contexts"]["prod"]["session_token"], OLD_PROD_TOKEN);
    assert_eq!(written["top_level_unknown"]["a"], "first");
}

#[test]
fn a_context_pointing_at_another_cluster_never_receives_the_token() {
    let (dir, path) = pachctl_dir(PACHCTL_CONFIG);
    let err = pachctl::sync_session(&path, "prod", "grpcs://evil.example.com:443", Some(&token(NEW_TOKEN)))
        .expect_err("another cluster's context must be refused");
    assert!(matches!(err, Error::AddressMismatch { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("pachctl config update context prod --pachd-address"), "{message}");
    assert!(!message.contains(NEW_TOKEN) && !message.contains(OLD_PROD_TOKEN), "{message}");
    assert_eq!(fs::read_to_string(&path).unwrap(), PACHCTL_CONFIG);
    assert_eq!(names_in(dir.path()), ["config.json"]);
}

#[test]
fn an_unqualified_address_of_the_same_cluster_matches() {
    let (_dir, path) = pachctl_dir(PACHCTL_CONFIG);
    // pachctl's `staging` says grpc://staging.example.com:30650; the agent may spell it without scheme or port.
    pachctl::sync_session(&path, "staging", "STAGING.example.com", Some(&token(NEW_TOKEN))).unwrap();
    let staging = &json(&path)["v2"]["contexts"]["staging"];
    assert_eq!(staging["session_token"], NEW_TOKEN);
    assert_eq!(staging["pachd_address"], "grpc://staging.example.com:30650", "pachctl's spelling is kept");
}

#[test]
fn camel_case_keys_that_pachctl_also_reads_are_updated_where_they_are() {
    let text = r#"{"v2":{"activeContext":"c","contexts":{"c":{"pachdAddress":"grpc://h:1","sessionToken":"old"}}}}"#;
    let (_dir, path) = pachctl_dir(text);
    pachctl::sync_session(&path, "c", "grpc://h:1", Some(&token(NEW_TOKEN))).unwrap();
    let written = json(&path);
    let c = written["v2"]["contexts"]["c"].as_object().unwrap();
    assert_eq!(c.keys().collect::<Vec<_>>(), ["pachdAddress", "sessionToken"], "no duplicate snake_case key");
    assert_eq!(c["sessionToken"], NEW_TOKEN);
    pachctl::sync_session(&path, "c", "grpc://h:1", None).unwrap();
    assert_eq!(json(&path)["v2"]["contexts"]["c"].as_object().unwrap().len(), 1);
}

#[test]
fn an_edit_made_while_pachagent_writes_is_kept_and_the_token_still_lands() {
    let (dir, path) = pachctl_dir(PACHCTL_CONFIG);
    let edited = PACHCTL_CONFIG.replace("dep-local", "dep-local-2").replace("\"metrics\": true", "\"metrics\": false");
    let mut calls = 0;
    // pachctl rewrites the file after pachagent read it and before pachagent renames its new version into place.
    let mut pachctl_writes = || {
        calls += 1;
        if calls == 1 {
            fs::write(&path, &edited).unwrap();
        }
    };
    pachctl::sync_session_with_hook(&path, "prod", PROD, Some(&token(NEW_TOKEN)), &mut pachctl_writes).unwrap();
    assert_eq!(calls, 2, "the first attempt saw the change and started over");
    assert_eq!(fs::read_to_string(&path).unwrap(), edited.replace(OLD_PROD_TOKEN, NEW_TOKEN));
    assert_eq!(names_in(dir.path()), ["config.json"]);
}

#[test]
fn a_file_that_never_stops_changing_is_left_to_its_writer() {
    let (dir, path) = pachctl_dir(PACHCTL_CONFIG);
    let mut n = 0;
    let mut busy_writer = || {
        n += 1;
        fs::write(&path, PACHCTL_CONFIG.replace("dep-local", &format!("dep-{n}"))).unwrap();
    };
    let err = pachctl::sync_session_with_hook(&path, "prod", PROD, Some(&token(NEW_TOKEN)), &mut busy_writer)
        .expect_err("gives up");
    assert!(matches!(err, Error::KeptChanging { .. }), "{err:?}");
    assert_eq!(fs::read_to_string(&path).unwrap(), PACHCTL_CONFIG.replace("dep-local", &format!("dep-{n}")));
    assert_eq!(names_in(dir.path()), ["config.json"]);
}

#[test]
fn many_concurrent_syncs_lose_no_update() {
    let (dir, path) = pachctl_dir(PACHCTL_CONFIG);
    let path = Arc::new(path);
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let path = Arc::clone(&path);
            std::thread::spawn(move || {
                for round in 0..25 {
                    let t = token(&format!("token-{w}-{round}"));
                    pachctl::sync_session(&path, &format!("ctx{w}"), &format!("grpc://h{w}:1"), Some(&t)).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let written = json(&path);
    for w in 0..8 {
        assert_eq!(written["v2"]["contexts"][format!("ctx{w}")]["session_token"], format!("token-{w}-24"));
    }
    assert_eq!(written["v2"]["contexts"]["prod"]["session_token"], OLD_PROD_TOKEN);
    assert_eq!(written["v2"]["added_in_v2_later"], "kept");
    assert_eq!(names_in(dir.path()), ["config.json"]);
}

#[test]
fn invalid_json_is_an_error_naming_the_file_and_the_file_is_left_alone() {
    let broken = format!(r#"{{"v2": {{"contexts": {{"prod": {{"session_token": "{OLD_PROD_TOKEN}",}}}}}}}}"#);
    let (dir, path) = pachctl_dir(&broken);
    let err = pachctl::sync_session(&path, "prod", PROD, Some(&token(NEW_TOKEN))).expect_err("not JSON");
    assert!(matches!(err, Error::Parse { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()) && message.contains("line 1"), "{message}");
    assert!(!message.contains(OLD_PROD_TOKEN) && !message.contains(NEW_TOKEN), "{message}");
    assert_eq!(fs::read_to_string(&path).unwrap(), broken);
    assert_eq!(names_in(dir.path()), ["config.json"]);

    fs::write(&path, r#"{"v2": {"contexts": ["prod"]}}"#).unwrap();
    let err = pachctl::sync_session(&path, "prod", PROD, Some(&token(NEW_TOKEN))).expect_err("wrong shape");
    assert!(err.to_string().contains("v2.contexts is not a JSON object"), "{err}");
}

#[test]
fn a_pachctl_1_config_is_left_for_pachctl_to_upgrade() {
    let v1 = r#"{"v1": {"pachd_address": "localhost:30650", "session_token": "x"}}"#;
    let (_dir, path) = pachctl_dir(v1);
    let err = pachctl::sync_session(&path, "default", "localhost:30650", Some(&token(NEW_TOKEN))).unwrap_err();
    assert!(matches!(err, Error::Legacy { .. }), "{err:?}");
    assert_eq!(fs::read_to_string(&path).unwrap(), v1);
    assert_eq!(pachctl::read_contexts(&path).unwrap(), [("default".to_owned(), "localhost:30650".to_owned())]);
}

#[test]
fn a_symlinked_config_is_updated_through_the_link() {
    let (dir, real) = pachctl_dir(PACHCTL_CONFIG);
    let link = dir.path().join("link.json");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    pachctl::sync_session(&link, "prod", PROD, Some(&token(NEW_TOKEN))).unwrap();
    assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link is still a link");
    assert_eq!(fs::read_to_string(&real).unwrap(), PACHCTL_CONFIG.replace(OLD_PROD_TOKEN, NEW_TOKEN));
}

#[test]
fn read_contexts_lists_names_and_addresses_in_file_order() {
    let (_dir, path) = pachctl_dir(PACHCTL_CONFIG);
    let all = pachctl::read(&path).unwrap();
    assert_eq!(all.active.as_deref(), Some("local"));
    let expected = [("local", "grpc://localhost:80"), ("prod", PROD), ("staging", "grpc://staging.example.com:30650")]
        .map(|(n, a)| (n.to_owned(), a.to_owned()));
    assert_eq!(pachctl::read_contexts(&path).unwrap(), expected);
    let missing = pachctl::read_contexts(&path.with_file_name("nope.json")).unwrap_err();
    assert!(matches!(missing, Error::Missing { .. }), "{missing:?}");
}

// ---------------------------------------------------------------------------------------------------------------
// The agent keeping pachctl's config in step (`sync_pachctl = true`), and a real write failure in it.

/// A pachctl config whose `dev` context points at `address`, padded with an unknown key of `padding` bytes.
fn pachctl_config_for(address: &str, padding: usize) -> String {
    format!(
        "{{\n  \"v2\": {{\n    \"active_context\": \"dev\",\n    \"contexts\": {{\n      \"dev\": {{\n        \
         \"pachd_address\": \"{address}\",\n        \"kept\": \"{}\"\n      }}\n    }}\n  }}\n}}",
        "x".repeat(padding)
    )
}

fn session_token_in(path: &Path) -> Option<String> {
    let doc: serde_json::Value = serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
    doc["v2"]["contexts"]["dev"]["session_token"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_with_sync_pachctl_keeps_pachctls_token_in_step_through_login_and_logout() {
    let pachd = support::PachdDev::start(None, None);
    let (dir, path) = pachctl_dir(&pachctl_config_for(&pachd.address, 10));
    let mut agent = support::TestAgent::new(support::Keyring::Keyutils);
    agent.env("PACH_CONFIG", path.to_str().unwrap());
    agent.add_context("dev", &pachd.address, &["--sync-pachctl"]);
    agent.start();
    let token = pachd.robot_token("ci", 0).await;
    agent.cli_stdin(&["login", "--token-stdin"], &token).ok();
    assert_eq!(session_token_in(&path).as_deref(), Some(token.as_str()), "pachctl now has the agent's token");
    let doc: serde_json::Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(doc["v2"]["contexts"]["dev"]["kept"], "x".repeat(10), "other keys are kept");
    assert_eq!(mode(&path), 0o600);
    agent.cli(&["logout"]).ok();
    assert_eq!(session_token_in(&path), None, "logout blanks pachctl's token too");
    assert_eq!(names_in(dir.path()), ["config.json"], "no temporary file is left");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_that_cannot_write_pachctls_config_on_a_full_disk_keeps_the_original_and_says_why() {
    let pachd = support::PachdDev::start(None, None);
    // Bigger than the file-size limit below, so the rewritten file cannot fit, as on a full disk.
    let text = pachctl_config_for(&pachd.address, 8192);
    let (dir, path) = pachctl_dir(&text);
    let mut agent = support::TestAgent::new(support::Keyring::Keyutils);
    agent.env("PACH_CONFIG", path.to_str().unwrap());
    agent.env("RUST_LOG", "warn");
    agent.add_context("dev", &pachd.address, &["--sync-pachctl"]);
    // `ulimit -f 4` (2 KiB in dash): writes past that fail with EFBIG; SIGXFSZ is ignored so the write returns
    // the error instead of the signal ending the agent.
    agent.start_wrapped(&["sh", "-c", "trap '' XFSZ; ulimit -f 4; exec \"$0\" \"$@\""]);
    let token = pachd.robot_token("ci", 0).await;
    agent.cli_stdin(&["login", "--token-stdin"], &token).ok();
    assert_eq!(fs::read_to_string(&path).unwrap(), text, "pachctl's config is exactly as it was");
    assert_eq!(names_in(dir.path()), ["config.json"], "no temporary file is left");
    let status = agent.cli(&["status", "--json"]).json();
    let error = status["sessions"][0]["last_error"].as_str().unwrap_or_default().to_owned();
    assert!(error.starts_with("pachctl sync:") && error.contains(&path.display().to_string()), "{status}");
    assert!(!error.contains(&token), "no token in the message");
    assert_eq!(agent.cli(&["whoami"]).ok().stdout, "You are \"robot:ci\"\n", "the session itself is fine");
}

// ---------------------------------------------------------------------------------------------------------------
// `pachagent context import-pachctl`.

/// A home directory with pachctl's config in its usual place, and pachagent's config and (absent) socket.
struct Home {
    dir: tempfile::TempDir,
    pachctl: PathBuf,
    config: PathBuf,
}

impl Home {
    fn new(pachctl_text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pachctl = dir.path().join(".pachyderm").join("config.json");
        fs::create_dir_all(pachctl.parent().unwrap()).unwrap();
        fs::write(&pachctl, pachctl_text).unwrap();
        let config = dir.path().join("pachagent").join("config.toml");
        Self { dir, pachctl, config }
    }

    fn cli(&self, args: &[&str], env: &[(&str, &Path)]) -> (i32, String, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pachagent"));
        cmd.args(args)
            .env_remove("PACH_CONFIG")
            .env_remove("PACHAGENT_CONTEXT")
            .env("HOME", self.dir.path())
            .env("PACHAGENT_CONFIG", &self.config)
            .env("PACHAGENT_SOCKET", self.dir.path().join("run").join("agent.sock"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
    }
}

/// pachctl's config with contexts pachagent can import and ones it cannot.
fn mixed_pachctl_config() -> String {
    PACHCTL_CONFIG.replace(
        r#"      "staging": {
        "pachd_address": "grpc://staging.example.com:30650"
      }"#,
        r#"      "staging": {
        "pachd_address": "grpc://staging.example.com:30650"
      },
      "bad name!": {
        "pachd_address": "grpc://h:1"
      },
      "socket": {
        "pachd_address": "unix:///var/run/pachd.sock"
      },
      "no-address": {
        "project": "default"
      }"#,
    )
}

#[test]
fn import_pachctl_adds_pachctls_contexts_and_says_which_it_skipped_and_why() {
    let home = Home::new(&mixed_pachctl_config());
    let (code, _, stderr) = home.cli(&["context", "add", "staging", "--pachd", "grpc://mine:1"], &[]);
    assert_eq!(code, 0, "{stderr}");

    let (code, stdout, stderr) = home.cli(&["context", "import-pachctl"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "Imported context \"local\" (grpc://localhost:80).");
    assert_eq!(lines[1], "Imported context \"prod\" (grpcs://pachd.example.com:443).");
    assert_eq!(lines[2], "Skipped \"staging\": a context with that name exists already.");
    assert!(lines[3].starts_with("Skipped \"bad name!\": context name \"bad name!\" is not usable"), "{stdout}");
    assert!(lines[4].starts_with("Skipped \"socket\": ") && lines[4].contains("unix"), "{stdout}");
    assert_eq!(lines[5], "Skipped \"no-address\": it has no pachd_address.");
    assert_eq!(
        lines[6],
        format!(
            "Imported 2 of 6 pachctl contexts from {} into {}. The active context is \"staging\".",
            home.pachctl.display(),
            home.config.display()
        )
    );
    assert_eq!(lines.len(), 7, "{stdout}");
    assert_eq!(fs::read_to_string(&home.pachctl).unwrap(), mixed_pachctl_config(), "pachctl's file is only read");

    let (_, list, _) = home.cli(&["context", "list", "--json"], &[]);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let contexts: Vec<(&str, &str)> = list["contexts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["pachd_address"].as_str().unwrap()))
        .collect();
    assert_eq!(contexts, [("local", "grpc://localhost:80"), ("prod", PROD), ("staging", "grpc://mine:1")]);

    let (code, stdout, _) = home.cli(&["context", "import-pachctl"], &[]);
    assert_eq!(code, 0);
    assert!(stdout.contains("Imported 0 of 6"), "a second import changes nothing: {stdout}");
}

#[test]
fn import_pachctl_reads_pach_config_makes_pachctls_active_context_active_and_prints_json() {
    let home = Home::new("{}");
    let elsewhere = home.dir.path().join("elsewhere.json");
    fs::write(&elsewhere, PACHCTL_CONFIG.replace("\"active_context\": \"local\"", "\"active_context\": \"prod\""))
        .unwrap();
    let (code, stdout, stderr) =
        home.cli(&["context", "import-pachctl", "--sync-pachctl", "--json"], &[("PACH_CONFIG", &elsewhere)]);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["from"], elsewhere.display().to_string());
    assert_eq!(report["config_path"], home.config.display().to_string());
    assert_eq!(report["active_context"], "prod", "pachctl's active context, since none was active here");
    let imported: Vec<&str> =
        report["imported"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(imported, ["local", "prod", "staging"]);
    assert_eq!(report["skipped"], serde_json::json!([]));
    assert_eq!(report["imported"][1]["pachd_address"], PROD);
    let toml = fs::read_to_string(&home.config).unwrap();
    assert_eq!(toml.matches("sync_pachctl = true").count(), 3, "{toml}");
}

#[test]
fn import_pachctl_without_pachctls_config_says_how_to_get_one() {
    let home = Home::new("{}");
    fs::remove_file(&home.pachctl).unwrap();
    let (code, _, stderr) = home.cli(&["context", "import-pachctl"], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(&home.pachctl.display().to_string()) && stderr.contains("pachctl connect"), "{stderr}");

    let nowhere = home.dir.path().join("nowhere.json");
    let (code, _, stderr) = home.cli(&["context", "import-pachctl", "--from", nowhere.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("nowhere.json"), "{stderr}");

    fs::write(&home.pachctl, "{}").unwrap();
    let (code, stdout, _) = home.cli(&["context", "import-pachctl"], &[]);
    assert_eq!(code, 0);
    assert_eq!(stdout, format!("No contexts in pachctl's config {}.\n", home.pachctl.display()));
}
