//! Unit tests of the record format, name checks and the memory backend. The real backends are tested in
//! `tests/store.rs`.

use super::record::{decode, encode};
use super::*;
use crate::secret::PachToken;

const TOKEN: &str = "5ec1e7f00d5ec1e7f00d5ec1e7f00d99";

fn session() -> StoredSession {
    StoredSession {
        pach_token: PachToken::new(TOKEN.to_owned()),
        username: "user:alice@example.com".to_owned(),
        expiration: chrono::DateTime::from_timestamp(1_900_000_000, 0),
        method: "oidc".to_owned(),
        pachd_address: "grpcs://pachd.example.com:443".to_owned(),
        issuer: Some("https://dex.example.com".to_owned()),
        refresh_token: None,
        subject: Some("alice".to_owned()),
        stored_at: 1_800_000_000,
        retired: Vec::new(),
    }
}

#[test]
fn a_record_round_trips_through_its_encoding() {
    let bytes = encode("prod", &session()).unwrap();
    let back = decode("prod", &bytes).unwrap();
    assert_eq!(back.pach_token.expose_secret(), TOKEN);
    assert_eq!(back.username, "user:alice@example.com");
    assert_eq!(back.expiration, chrono::DateTime::from_timestamp(1_900_000_000, 0));
    assert_eq!(back.method, "oidc");
    assert_eq!(back.pachd_address, "grpcs://pachd.example.com:443");
    assert_eq!(back.issuer.as_deref(), Some("https://dex.example.com"));
    assert_eq!(back.stored_at, 1_800_000_000);
}

#[test]
fn replaced_tokens_someone_may_hold_round_trip_with_their_expirations() {
    let mut s = session();
    s.retired = vec![
        RetiredToken {
            token: PachToken::new("aaaaaaaaaaaa4aaaaaaaaaaaaaaaaaaa".into()),
            expiration: chrono::DateTime::from_timestamp(1_900_000_001, 250_000_000),
        },
        RetiredToken { token: PachToken::new("bbbbbbbbbbbb4bbbbbbbbbbbbbbbbbbb".into()), expiration: None },
    ];
    let back = decode("prod", &encode("prod", &s).unwrap()).unwrap();
    let got: Vec<_> = back.retired.iter().map(|r| (r.token.expose_secret().to_owned(), r.expiration)).collect();
    assert_eq!(
        got,
        vec![
            ("aaaaaaaaaaaa4aaaaaaaaaaaaaaaaaaa".to_owned(), s.retired[0].expiration),
            ("bbbbbbbbbbbb4bbbbbbbbbbbbbbbbbbb".to_owned(), None),
        ]
    );
    // One entry with an impossible expiration costs only itself.
    let raw = format!(
        r#"{{"v":1,"pach_token":"{TOKEN}","username":"u","expiration":null,"method":"oidc","pachd_address":"a",
            "stored_at":1,"retired":[{{"token":"bad","expiration_ms":9223372036854775807}},
            {{"token":"good","expiration_ms":1900000000000}}]}}"#
    );
    let back = decode("prod", raw.as_bytes()).unwrap();
    let kept: Vec<&str> = back.retired.iter().map(|r| r.token.expose_secret()).collect();
    assert_eq!(kept, ["good"]);
    // A record without any keeps the field out, so the bytes older builds wrote and read do not change.
    let plain: serde_json::Value = serde_json::from_slice(&encode("prod", &session()).unwrap()).unwrap();
    assert!(plain.get("retired").is_none(), "{plain}");
}

#[test]
fn a_record_is_versioned_json_without_an_id_token() {
    let bytes = encode("prod", &session()).unwrap();
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(value["v"], 1);
    assert!(value.get("id_token").is_none(), "{value}");
    assert_eq!(value["expiration"], 1_900_000_000);
}

#[test]
fn an_expiration_keeps_its_milliseconds_and_old_readers_get_whole_seconds_rounded_down() {
    let mut s = session();
    s.expiration = chrono::DateTime::from_timestamp(1_900_000_059, 999_000_000);
    let bytes = encode("prod", &s).unwrap();
    let back = decode("prod", &bytes).unwrap();
    assert_eq!(back.expiration, s.expiration, "a token ending at :59.999 must not come back as ending at :59");
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(value["expiration"], 1_900_000_059);
    assert_eq!(value["expiration_ms"], 1_900_000_059_999_i64);
}

#[test]
fn a_record_written_before_milliseconds_reads_its_whole_seconds() {
    let raw = format!(
        r#"{{"v":1,"pach_token":"{TOKEN}","username":"u","expiration":1900000059,"method":"oidc","pachd_address":"a",
            "stored_at":5}}"#
    );
    let back = decode("c", raw.as_bytes()).unwrap();
    assert_eq!(back.expiration, chrono::DateTime::from_timestamp(1_900_000_059, 0));
}

#[test]
fn never_expiring_sessions_and_missing_issuers_are_null() {
    let mut s = session();
    s.expiration = None;
    s.issuer = None;
    let bytes = encode("dev", &s).unwrap();
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert!(value["expiration"].is_null() && value["issuer"].is_null(), "{value}");
    let back = decode("dev", &bytes).unwrap();
    assert_eq!((back.expiration, back.issuer), (None, None));
}

#[test]
fn unknown_fields_from_a_later_version_one_writer_are_ignored() {
    let raw = format!(
        r#"{{"v":1,"pach_token":"{TOKEN}","username":"u","expiration":null,"method":"pachd","pachd_address":"a",
            "stored_at":5,"refresh_hint":{{"at":7}},"labels":["x"]}}"#
    );
    let back = decode("c", raw.as_bytes()).unwrap();
    assert_eq!(back.method, "pachd");
    assert_eq!(back.issuer, None);
}

#[test]
fn a_record_from_a_newer_pachagent_is_corrupt_and_says_so() {
    let raw = format!(r#"{{"v":2,"pach_token":"{TOKEN}","whatever":true}}"#);
    let err = decode("prod", raw.as_bytes()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Corrupt { ref context, .. } if context == "prod"), "{err:?}");
    assert!(text.contains("a newer pachagent wrote it"), "{text}");
    assert!(!text.contains(TOKEN), "{text}");
}

#[test]
fn records_without_a_version_or_not_json_are_corrupt_without_quoting_them() {
    for raw in
        [format!(r#"{{"pach_token":"{TOKEN}"}}"#), format!("{TOKEN} not json"), format!(r#"{{"v":0,"t":"{TOKEN}"}}"#)]
    {
        let err = decode("c", raw.as_bytes()).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
        assert!(!text.contains(TOKEN) && !format!("{err:?}").contains(TOKEN), "{text}");
    }
}

#[test]
fn a_version_one_record_missing_a_field_is_corrupt() {
    let raw = format!(r#"{{"v":1,"pach_token":"{TOKEN}"}}"#);
    let err = decode("c", raw.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("bad fields"), "{err}");
    assert!(!err.to_string().contains(TOKEN), "{err}");
}

#[test]
fn debug_output_of_a_session_never_shows_the_token() {
    let shown = format!("{:?} {:#?}", session(), Some(session()));
    assert!(!shown.contains(TOKEN), "{shown}");
    assert!(shown.contains("PachToken([redacted])"), "{shown}");
}

#[test]
fn names_that_cannot_name_an_entry_are_rejected() {
    assert!(check_name("context", "prod", false).is_ok());
    assert!(check_name("context", "team:prod/eu", false).is_ok());
    assert!(check_name("service", "pachagent-test-1-2", true).is_ok());
    for (name, is_service) in [("", false), ("a\nb", false), ("a\0b", false), ("pach:agent", true)] {
        let err = check_name("x", name, is_service).unwrap_err();
        assert!(matches!(err, Error::InvalidName { .. }), "{err:?}");
    }
}

#[test]
fn backend_names_and_persistence_match_the_configuration_words() {
    let all = [
        (Backend::SecretService, "secret-service", true),
        (Backend::Keyutils, "keyutils", false),
        (Backend::Keychain, "keychain", true),
        (Backend::CredentialManager, "credential-manager", true),
        (Backend::Memory, "memory", false),
    ];
    for (backend, name, persistent) in all {
        assert_eq!((backend.name(), backend.persistent()), (name, persistent));
        assert_eq!(backend.to_string(), name);
    }
}

#[test]
fn error_messages_are_lowercase_and_say_what_to_do() {
    let errors = [
        Error::Unavailable { backend: Backend::SecretService, reason: "no bus".to_owned() },
        Error::Locked { backend: Backend::SecretService },
        Error::TimedOut { backend: Backend::SecretService, seconds: 5 },
        Error::Corrupt { context: "prod".to_owned(), reason: "x".to_owned() },
        Error::QuotaExceeded { backend: Backend::Keyutils, reason: "x".to_owned() },
    ];
    for e in errors {
        let text = e.to_string();
        assert!(text.starts_with("the "), "{text}");
        assert!(text.contains(": "), "{text}");
    }
    let text = Error::Unavailable { backend: Backend::SecretService, reason: "no bus".to_owned() }.to_string();
    assert!(text.contains("gnome-keyring-daemon") && text.contains("store = \"keyutils\""), "{text}");
}

#[tokio::test]
async fn the_memory_store_round_trips_and_is_shared_by_clones() {
    let store = Store::memory();
    let clone = store.clone();
    assert_eq!(store.backend(), Backend::Memory);
    assert!(!store.backend().persistent());
    store.probe().await.unwrap();
    assert!(store.load("prod").await.unwrap().is_none());
    store.save("prod", &session()).await.unwrap();
    let back = clone.load("prod").await.unwrap().unwrap();
    assert_eq!(back.pach_token.expose_secret(), TOKEN);
    assert!(clone.delete("prod").await.unwrap());
    assert!(!store.delete("prod").await.unwrap());
    assert!(store.load("prod").await.unwrap().is_none());
}

#[tokio::test]
async fn a_record_over_the_kernel_payload_limit_is_too_large() {
    let mut s = session();
    s.pachd_address = "x".repeat(MAX_RECORD_BYTES);
    let err = Store::memory().save("big", &s).await.unwrap_err();
    let Error::TooLarge { context, size, limit, .. } = &err else { panic!("{err:?}") };
    assert_eq!((context.as_str(), *limit), ("big", MAX_RECORD_BYTES));
    assert!(*size > MAX_RECORD_BYTES, "{size}");
}
