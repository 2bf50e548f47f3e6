//! Logging in by handing the agent an OIDC ID token, which pachd (here pachd-dev) verifies against its issuer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use serde_json::json;
use support::issuer::TestIssuer;
use support::{Keyring, PachdDev, TestAgent};

fn expiry_in_secs(agent: &TestAgent) -> i64 {
    let json = agent.cli(&["whoami", "--json"]).json();
    let exp = chrono::DateTime::parse_from_rfc3339(json["expiration"].as_str().unwrap()).unwrap();
    exp.signed_duration_since(chrono::Utc::now()).num_seconds()
}

fn agent_for(pachd: &PachdDev) -> TestAgent {
    let mut agent = TestAgent::new(Keyring::SecretService);
    agent.add_context("dev", &pachd.address, &[]);
    agent.start();
    agent
}

#[test]
fn an_id_token_login_is_the_email_user_and_ends_with_the_id_token_when_that_is_sooner() {
    let issuer = TestIssuer::start();
    let pachd = PachdDev::start(Some(issuer.issuer()), Some("1h"));
    let agent = agent_for(&pachd);
    let id_token = issuer.id_token_for("alice@example.com", "pachd", Duration::from_secs(300));
    let out = agent.cli_stdin(&["login", "--id-token-stdin"], &id_token);
    out.ok();
    assert!(out.stdout.starts_with("You are \"user:alice@example.com\"\nsession expires: "), "{out:#?}");
    let left = expiry_in_secs(&agent);
    assert!((290..=300).contains(&left), "the ID token's 5 minutes, got {left} s");
    let status = agent.cli(&["status", "--json"]).json();
    assert_eq!(status["sessions"][0]["method"], "id-token");
}

#[test]
fn an_id_token_login_ends_with_pachds_session_duration_when_that_is_sooner() {
    let issuer = TestIssuer::start();
    let pachd = PachdDev::start(Some(issuer.issuer()), Some("10m"));
    let agent = agent_for(&pachd);
    let id_token = issuer.id_token_for("bob@example.com", "pachd", Duration::from_secs(3600));
    agent.cli_stdin(&["login", "--id-token-stdin"], &id_token).ok();
    let left = expiry_in_secs(&agent);
    assert!((590..=600).contains(&left), "the session's 10 minutes, got {left} s");
    assert_eq!(agent.cli(&["whoami"]).ok().stdout.lines().next(), Some("You are \"user:bob@example.com\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn id_tokens_with_a_wrong_audience_issuer_or_signature_are_refused_with_pachds_message_and_change_nothing() {
    let issuer = TestIssuer::start();
    let pachd = PachdDev::start(Some(issuer.issuer()), None);
    let agent = agent_for(&pachd);
    let good = issuer.id_token_for("alice@example.com", "pachd", Duration::from_secs(600));
    agent.cli_stdin(&["login", "--id-token-stdin"], &good).ok();
    let stored_before = agent.stored("dev").await.unwrap().pach_token.expose_secret().to_owned();

    let mut slash = issuer.claims_for("eve@example.com", "pachd", Duration::from_secs(600));
    slash["iss"] = json!(format!("{}/", issuer.issuer()));
    let mut other_aud = issuer.claims_for("eve@example.com", "pachd", Duration::from_secs(600));
    other_aud["aud"] = json!("someone-else");
    let cases = [
        (issuer.mint(other_aud), "oidc: expected audience \"pachd\" got [\"someone-else\"]".to_owned()),
        (
            issuer.mint(slash),
            format!(
                "oidc: id token issued by a different provider, expected {:?} got {:?}",
                issuer.issuer(),
                format!("{}/", issuer.issuer())
            ),
        ),
        (
            issuer.mint_with_foreign_key(issuer.claims_for("eve@example.com", "pachd", Duration::from_secs(600))),
            "failed to verify signature".to_owned(),
        ),
    ];
    for (token, pachds_words) in cases {
        let out = agent.cli_stdin(&["login", "--id-token-stdin"], &token);
        assert_eq!(out.code, 1, "{out:#?}");
        assert!(out.stderr.contains("could not verify token"), "{out:#?}");
        assert!(out.stderr.contains(&pachds_words), "expected {pachds_words:?} in {out:#?}");
        let who = agent.cli(&["whoami"]);
        assert_eq!(who.ok().stdout.lines().next(), Some("You are \"user:alice@example.com\""), "session kept");
    }
    let stored_after = agent.stored("dev").await.unwrap().pach_token.expose_secret().to_owned();
    assert_eq!(stored_before, stored_after, "the keyring entry is untouched by refused logins");
}

#[test]
fn an_empty_id_token_is_a_usage_error_that_says_how_to_pass_one() {
    let pachd = PachdDev::start(None, None);
    let agent = agent_for(&pachd);
    let out = agent.cli_stdin(&["login", "--id-token-stdin"], "\n");
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(out.stderr.contains("--id-token-stdin"), "{out:#?}");
}
