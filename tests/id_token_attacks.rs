//! Forged and broken ID tokens from a real provider (`tests/oidc/server.js` re-mints its genuine token with the
//! change a test asks for, signed with its own key, a stranger's, none, or HMAC keyed with its public key), at a
//! browser login and at a renewal. Each is refused with a message that names the failed check; the session the
//! agent holds stays as it was, and a refresh token the provider rotated on the way is kept. A signing key the
//! provider rotates is fetched once and accepted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use chrono::Utc;
use pachagent::proto::agent::{EventKind, GetTokenRequest, WatchRequest};
use serde_json::json;
use support::issuer::TestIssuer;
use support::op::{self, Forgery, Signing, TestOp};
use support::{Keyring, PachdDev, TestAgent, fake_user};

const EMAIL: &str = "alice@example.com";
const USER: &str = "You are \"user:alice@example.com\"";
/// The agent's User-Agent, which tells its key fetches from pachd-dev's.
const AGENT: &str = "pachagent/";

/// pachd-dev trusting `op` for the public client's ID tokens, and an agent logged in through the browser flow
/// whose context also trusts the `pachd` audience (as with Dex's audience scope), so that a token for several
/// audiences reaches the authorized-party check. Renewals are left to the test: the scheduler's would come only
/// with a quarter of the token's life left.
fn logged_in(op: &TestOp) -> (PachdDev, TestAgent) {
    let pachd = PachdDev::start_with_args(Some(op.issuer()), None, None, &["--client-id", op::PUBLIC_CLIENT]);
    let mut agent = TestAgent::new(Keyring::SecretService);
    agent.add_context(
        "dev",
        &pachd.address,
        &["--issuer", op.issuer(), "--client-id", op::PUBLIC_CLIENT, "--scope", "audience:server:client_id:pachd"],
    );
    agent.set_context_option("dev", "refresh_margin", "10s".into());
    agent.env("BROWSER", op::FAKE_USER);
    agent.env("FAKE_USER_EMAIL", EMAIL);
    agent.start();
    let out = agent.cli(&["login"]);
    assert!(out.ok().stdout.starts_with(USER), "{out:#?}");
    (pachd, agent)
}

/// The stored session as a user would compare it.
#[derive(PartialEq, Eq)]
struct Stored {
    pach_token: String,
    username: String,
    expiration: Option<chrono::DateTime<chrono::Utc>>,
    refresh_token: Option<String>,
}

/// Tokens appear in failure messages by a short fingerprint only.
impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use sha2::Digest as _;
        let print = |t: &str| hex::encode(&sha2::Sha256::digest(t.as_bytes())[..4]);
        f.debug_struct("Stored")
            .field("pach_token", &print(&self.pach_token))
            .field("username", &self.username)
            .field("expiration", &self.expiration)
            .field("refresh_token", &self.refresh_token.as_deref().map(print))
            .finish()
    }
}

async fn stored(agent: &TestAgent) -> Stored {
    let s = agent.stored("dev").await.expect("a stored session");
    Stored {
        pach_token: s.pach_token.expose_secret().to_owned(),
        username: s.username,
        expiration: s.expiration,
        refresh_token: s.refresh_token.map(|t| t.expose_secret().to_owned()),
    }
}

/// A `--min-valid` that makes `pachagent token` renew: two seconds less than the session had left just now
/// (which a fresh token covers), returned once the session surely has less than that (`whoami` shows the expiry
/// to the second, so up to a second more may be left). Takes four seconds.
fn min_valid_forcing_renewal(agent: &TestAgent) -> String {
    let json = agent.cli(&["whoami", "--json"]).json();
    let exp = chrono::DateTime::parse_from_rfc3339(json["expiration"].as_str().unwrap()).unwrap();
    let left = exp.signed_duration_since(Utc::now()).num_seconds() - 2;
    std::thread::sleep(Duration::from_secs(4));
    format!("{left}s")
}

/// The issuer with its trailing slash added, or taken away.
fn slash_toggled(issuer: &str) -> String {
    match issuer.strip_suffix('/') {
        Some(bare) => bare.to_owned(),
        None => format!("{issuer}/"),
    }
}

/// One attack on the next ID token, and the words its refusal must contain.
struct Attack {
    what: &'static str,
    forgery: Forgery,
    says: &'static str,
    /// The token names a key the agent has not seen, so the provider's key set is fetched once more.
    refetches_keys: bool,
    /// Only a login has a nonce to check.
    login_only: bool,
}

fn attacks(issuer: &str) -> Vec<Attack> {
    let now = Utc::now().timestamp();
    let attack = |what, forgery, says| Attack { what, forgery, says, refetches_keys: false, login_only: false };
    vec![
        attack(
            "a signature by another key under the provider's kid",
            Forgery::new().signed(Signing::Stranger),
            "its signature does not verify with the provider's key",
        ),
        attack("alg none", Forgery::new().signed(Signing::None), "it is not signed (alg \"none\")"),
        attack(
            "HS256 keyed with the provider's RSA public key (key confusion)",
            Forgery::new().signed(Signing::Hs256WithPublicKey),
            "its signature algorithm (alg) HS256 is not accepted",
        ),
        Attack {
            refetches_keys: true,
            ..attack(
                "a kid the provider does not publish",
                Forgery::new().signed(Signing::UnknownKid),
                "that the provider does not publish, even after fetching its key set",
            )
        },
        attack(
            "an issuer that differs by a trailing slash",
            Forgery::new().set("iss", slash_toggled(issuer)),
            "trailing slash",
        ),
        attack(
            "another issuer",
            Forgery::new().set("iss", "https://idp.evil.example"),
            "its issuer (iss) is \"https://idp.evil.example\", not",
        ),
        attack(
            "another audience",
            Forgery::new().set("aud", "someone-else"),
            "its audience (aud) is [\"someone-else\"], which does not include this client \"pachagent\"",
        ),
        attack(
            "an extra audience the context does not trust",
            Forgery::new().set("aud", json!([op::PUBLIC_CLIENT, "stranger"])).set("azp", op::PUBLIC_CLIENT),
            "its audience (aud) also names \"stranger\", which this context does not trust",
        ),
        attack(
            "several audiences and no authorized party",
            Forgery::new().set("aud", json!([op::PUBLIC_CLIENT, "pachd"])).remove("azp"),
            "it is for several audiences (pachagent, pachd) but names no authorized party (azp)",
        ),
        attack(
            "another client as the authorized party",
            Forgery::new().set("azp", "pachd"),
            "its authorized party (azp) is \"pachd\", not this client \"pachagent\"",
        ),
        attack("an expired token", Forgery::new().set("iat", now - 600).set("exp", now - 300), "it has expired"),
        attack(
            "iat ten minutes ahead",
            Forgery::new().set("iat", now + 600).set("exp", now + 900),
            "it was issued in the future (iat",
        ),
        attack("nbf ten minutes ahead", Forgery::new().set("nbf", now + 600), "it is not valid yet (nbf"),
        attack(
            "a claim of the wrong type (exp as text)",
            Forgery::new().set("exp", "tomorrow"),
            "it cannot be read as an ID token",
        ),
        attack("no email claim", Forgery::new().remove("email"), "it has no email claim, and pachd names users by"),
        Attack { login_only: true, ..attack("no nonce", Forgery::new().remove("nonce"), "it carries no nonce") },
        Attack {
            login_only: true,
            ..attack(
                "another login's nonce",
                Forgery::new().set("nonce", "n-0S6_WzA2Mj"),
                "its nonce is not this login's",
            )
        },
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn every_forged_or_broken_id_token_at_login_is_refused_naming_the_check_and_the_old_session_stays() {
    let op = TestOp::start();
    let (pachd, agent) = logged_in(&op);
    let before = stored(&agent).await;
    let attacks = attacks(op.issuer());
    for (n, attack) in attacks.iter().enumerate() {
        op.forge_next_id_token(&attack.forgery);
        let fetches = op.jwks_fetches_by(AGENT);
        let out = agent.cli(&["login", "--force"]);
        let what = attack.what;
        assert_eq!(op.forged(), n as u64 + 1, "{what}: the forged token was handed out: {out:#?}");
        assert_eq!(out.code, 4, "{what}: refused by the agent (an upstream failure): {out:#?}");
        assert!(out.stderr.contains("the ID token was rejected: "), "{what}: {out:#?}");
        assert!(out.stderr.contains(attack.says), "{what}: expected {:?} in {out:#?}", attack.says);
        let refetch = u64::from(attack.refetches_keys);
        assert_eq!(
            op.jwks_fetches_by(AGENT) - fetches,
            1 + refetch,
            "{what}: discovery's key set, and once more for a new kid"
        );
        assert!(agent.cli(&["whoami"]).ok().stdout.starts_with(USER), "{what}");
        assert_eq!(stored(&agent).await, before, "{what}: the stored session is untouched");
    }
    assert_eq!(pachd.id_token_logins(), 1, "no refused token reached pachd");
    assert_eq!(agent.cli(&["status", "--json"]).json()["sessions"][0]["state"], "active");
}

/// At start the agent checks each restored session with pachd. A renewal refused while that check still waits on
/// pachd keeps its error when pachd then accepts the old token: status goes on saying why a login is needed.
#[tokio::test(flavor = "multi_thread")]
async fn a_renewal_refused_while_the_start_up_check_waits_on_pachd_keeps_its_error() {
    let op = TestOp::builder().start();
    let (pachd, mut agent) = logged_in(&op);
    let min_valid = min_valid_forcing_renewal(&agent);
    let attack = attacks(op.issuer()).into_iter().find(|a| !a.login_only).unwrap();
    agent.stop();
    support::signal(pachd.pid(), libc::SIGSTOP);
    agent.start();
    op.forge_next_id_token(&attack.forgery);
    let out = agent.cli(&["token", "--min-valid", &min_valid]);
    support::signal(pachd.pid(), libc::SIGCONT);
    assert_eq!(out.code, 1, "{}: {out:#?}", attack.what);
    agent.wait_for_log("restored session checked with pachd", Duration::from_secs(20));

    let status = agent.cli(&["status", "--json"]).json();
    assert_eq!(status["sessions"][0]["state"], "login_required", "{status}");
    let last_error = status["sessions"][0]["last_error"].as_str().unwrap_or_default();
    assert!(last_error.contains(attack.says), "{}: {status}", attack.what);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_forged_or_broken_id_token_at_renewal_is_refused_naming_the_check_and_the_rotated_refresh_token_survives()
{
    // An Auth0-style issuer, so that the slash case here is a missing slash (the login test has the extra one).
    let op = TestOp::builder().trailing_slash().start();
    let (pachd, mut agent) = logged_in(&op);
    let min_valid = min_valid_forcing_renewal(&agent);
    let attacks: Vec<Attack> = attacks(op.issuer()).into_iter().filter(|a| !a.login_only).collect();
    for (n, attack) in attacks.iter().enumerate() {
        let what = attack.what;
        // A fresh agent: a renewal that was refused is not retried until a restart (or a login).
        agent.stop();
        agent.start();
        let before = stored(&agent).await;
        op.forge_next_id_token(&attack.forgery);
        let fetches = op.jwks_fetches_by(AGENT);
        let out = agent.cli(&["token", "--min-valid", &min_valid]);
        assert_eq!(op.forged(), n as u64 + 1, "{what}: the forged token was handed out: {out:#?}");
        assert_eq!(out.code, 1, "{what}: no session good for that long: {out:#?}");
        assert!(out.stderr.contains("can no longer be renewed (the ID token was rejected: "), "{what}: {out:#?}");
        assert!(out.stderr.contains(attack.says), "{what}: expected {:?} in {out:#?}", attack.says);
        assert!(out.stderr.contains("run pachagent login --context dev"), "{what}: {out:#?}");
        let refetch = u64::from(attack.refetches_keys);
        assert_eq!(
            op.jwks_fetches_by(AGENT) - fetches,
            1 + refetch,
            "{what}: discovery's key set, and once more for a new kid"
        );

        let status = agent.cli(&["status", "--json"]).json();
        assert_eq!(status["sessions"][0]["state"], "login_required", "{what}: {status}");
        assert!(status["sessions"][0]["last_error"].as_str().unwrap().contains(attack.says), "{what}: {status}");
        let after = stored(&agent).await;
        assert_eq!(
            (&after.pach_token, &after.username, after.expiration),
            (&before.pach_token, &before.username, before.expiration),
            "{what}: the stored session keeps its token"
        );
        assert!(after.refresh_token != before.refresh_token, "{what}: the refresh token the provider rotated is kept");
        let served = agent.cli(&["token"]);
        assert!(served.ok().stdout.trim() == before.pach_token, "{what}: the old token is served while it lasts");
        assert!(agent.cli(&["whoami"]).ok().stdout.starts_with(USER), "{what}");
    }
    assert_eq!(pachd.id_token_logins(), 1, "no refused token reached pachd");

    // Every refresh token the agent kept was the live one: a normal renewal works, and the provider never saw
    // a dead one (with reuse detection, that would have revoked the grant).
    agent.stop();
    agent.start();
    let old = stored(&agent).await;
    let renewed = agent.cli(&["token", "--min-valid", &min_valid]);
    let token = renewed.ok().stdout.trim().to_owned();
    assert!(token != old.pach_token, "a renewed token");
    assert_eq!(pachd.who_am_i(&token).await.unwrap(), "user:alice@example.com");
    assert!(stored(&agent).await.pach_token == token, "the keyring holds the renewed token");
    let stats = op.stats();
    assert_eq!(stats["refresh_token"], attacks.len() as u64 + 1, "{stats}");
    assert!(stats["errors"].get("refresh_token").is_none(), "no refresh was refused by the provider: {stats}");
    assert_eq!(agent.cli(&["status", "--json"]).json()["sessions"][0]["state"], "active");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signing_key_rotated_after_discovery_is_fetched_once_then_accepted_at_login_and_at_renewal() {
    let op = TestOp::start();
    let (pachd, agent) = logged_in(&op);

    // The login discovers the provider (and its keys); the provider rotates before the code is exchanged.
    let fetches = op.jwks_fetches_by(AGENT);
    let mut login = agent.spawn_cli(&["login", "--force", "--no-browser"]);
    let url = login.login_url();
    op.rotate_keys();
    assert_eq!(fake_user(&url, EMAIL, "approve"), 0);
    let out = login.finish(30);
    assert!(out.ok().stdout.starts_with(USER), "{out:#?}");
    assert_eq!(op.jwks_fetches_by(AGENT) - fetches, 2, "discovery's key set, then once more for the new kid");
    assert_eq!(pachd.id_token_logins(), 2);

    // Renewals reuse the provider as the login left it; it rotates again.
    let min_valid = min_valid_forcing_renewal(&agent);
    let fetches = op.jwks_fetches_by(AGENT);
    op.rotate_keys();
    let out = agent.cli(&["token", "--min-valid", &min_valid]);
    let token = out.ok().stdout.trim().to_owned();
    assert_eq!(pachd.who_am_i(&token).await.unwrap(), "user:alice@example.com");
    assert_eq!(op.jwks_fetches_by(AGENT) - fetches, 1, "the key set is fetched once, for the new kid");
    assert_eq!(op.grants("refresh_token"), 1);

    // The keys fetched then serve the renewals after.
    let min_valid = min_valid_forcing_renewal(&agent);
    agent.cli(&["token", "--min-valid", &min_valid]).ok();
    assert_eq!(op.grants("refresh_token"), 2);
    assert_eq!(op.jwks_fetches_by(AGENT) - fetches, 1, "no fetch for a key already known");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scheduled_renewal_whose_id_token_is_refused_asks_for_a_login_once_and_keeps_serving_the_old_token() {
    // Ten-second ID tokens: the scheduler renews after about five.
    let op = TestOp::builder().id_token_ttl(Duration::from_secs(10)).start();
    let pachd = PachdDev::start_with_args(Some(op.issuer()), None, None, &["--client-id", op::PUBLIC_CLIENT]);
    let mut agent = TestAgent::new(Keyring::SecretService);
    agent.add_context("dev", &pachd.address, &["--issuer", op.issuer(), "--client-id", op::PUBLIC_CLIENT]);
    agent.env("BROWSER", op::FAKE_USER);
    agent.env("FAKE_USER_EMAIL", EMAIL);
    agent.start();
    let mut client = agent.grpc().await;
    let mut events = client.watch(WatchRequest::default()).await.unwrap().into_inner();
    agent.cli(&["login"]).ok();
    op.forge_next_id_token(&Forgery::new().signed(Signing::Stranger));

    let old = stored(&agent).await;
    let (required, before) =
        support::next_event_after(&agent, &mut events, EventKind::LoginRequired, Duration::from_secs(15)).await;
    assert!(!before.contains(&(EventKind::RefreshFailed as i32)), "no retry was planned: {before:?}");
    assert!(required.detail.contains("its signature does not verify"), "{}", required.detail);
    assert!(required.detail.contains("run pachagent login --context dev"), "{}", required.detail);
    assert_eq!(op.forged(), 1);

    let served = client
        .get_token(GetTokenRequest { context: String::new(), min_valid_seconds: 0, ..Default::default() })
        .await
        .expect("the still-valid token is served")
        .into_inner()
        .token;
    assert!(served == old.pach_token, "the old token is served");
    assert_eq!(pachd.who_am_i(&served).await.unwrap(), "user:alice@example.com");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(op.grants("refresh_token"), 1, "one renewal, and no retry");
    let status = agent.cli(&["status", "--json"]).json();
    assert_eq!(status["sessions"][0]["state"], "login_required", "{status}");
    assert!(status["sessions"][0]["last_error"].as_str().unwrap().contains("signature"), "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_id_token_without_email_which_pachd_makes_the_nameless_user_is_refused_when_handed_in() {
    let issuer = TestIssuer::start();
    let pachd = PachdDev::start(Some(issuer.issuer()), None);
    let mut nameless = issuer.claims_for(EMAIL, "pachd", Duration::from_secs(600));
    nameless.as_object_mut().unwrap().remove("email");
    let nameless = issuer.mint(nameless);

    // pachd itself accepts it, as real pachd does, for the subject "user:" and nothing after it.
    let token = pachd
        .api()
        .await
        .authenticate(pachagent::proto::auth::AuthenticateRequest { id_token: nameless.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .pach_token;
    assert_eq!(pachd.who_am_i(&token).await.unwrap(), "user:");

    let mut agent = TestAgent::new(Keyring::SecretService);
    agent.add_context("dev", &pachd.address, &[]);
    agent.start();
    let good = issuer.id_token_for(EMAIL, "pachd", Duration::from_secs(600));
    agent.cli_stdin(&["login", "--id-token-stdin"], &good).ok();
    let before = stored(&agent).await;
    let out = agent.cli_stdin(&["login", "--id-token-stdin"], &nameless);
    assert_eq!(out.code, 4, "{out:#?}");
    assert!(out.stderr.contains("it has no email claim, so pachd made its session the nameless \"user:\""), "{out:#?}");
    assert!(agent.cli(&["whoami"]).ok().stdout.starts_with(USER));
    assert_eq!(stored(&agent).await, before, "the stored session is untouched");
    assert_eq!(pachd.id_token_logins(), 3, "pachd minted the nameless session the agent then refused");
    assert!(pachd.log().contains("RevokeAuthToken"), "the agent revoked it:\n{}", pachd.log());
}
