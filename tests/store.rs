//! The session store against real OS stores: the kernel user keyring (`@u`) and a real gnome-keyring over D-Bus.
//!
//! The Secret Service tests need the session bus with an unlocked gnome-keyring that `scripts/test.sh` sets up;
//! without one they fail and print the command to run, they never skip. Tests that need a store of their own (a
//! locked or a frozen gnome-keyring, a session keyring that does not possess `@u`, no bus at all) re-run one
//! `#[ignore]`d `child_*` test of this binary as a child process inside that environment. The `child_*` tests
//! refuse to run on their own.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use linux_keyutils::{Key, KeyPermissionsBuilder, KeyRing, KeyRingIdentifier, Permission};
use pachagent::config::StoreChoice;
use pachagent::secret::PachToken;
use pachagent::store::{Backend, Error, Store, StoredSession};

/// Set in a child's environment to the name of the one `child_*` test it may run.
const CHILD_ENV: &str = "PACHAGENT_STORE_TEST_CHILD";
/// The keyring service a child works on, chosen by its parent.
const SERVICE_ENV: &str = "PACHAGENT_STORE_TEST_SERVICE";
/// How to get a session bus with an unlocked Secret Service.
const HOW_TO_RUN: &str = "run the tests with `scripts/test.sh`, which installs dbus, gnome-keyring, libsecret-tools \
    and keyutils when missing and runs them in a private D-Bus session with a throwaway, unlocked gnome-keyring";
/// A locked or frozen store must answer within this: the store's 5 s timeout plus slack.
const ANSWER_WITHIN: Duration = Duration::from_secs(6);

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A service name no other test, run or process uses.
fn unique_service() -> String {
    format!("pachagent-test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

fn session(token: &str) -> StoredSession {
    StoredSession {
        pach_token: PachToken::new(token.to_owned()),
        username: "user:alice@example.com".to_owned(),
        expiration: Some(1_900_000_000),
        method: "oidc".to_owned(),
        pachd_address: "grpcs://pachd.example.com:443".to_owned(),
        issuer: Some("https://dex.example.com".to_owned()),
        stored_at: 1_800_000_000,
    }
}

#[track_caller]
fn assert_same(got: &StoredSession, want: &StoredSession) {
    assert_eq!(got.pach_token.expose_secret(), want.pach_token.expose_secret());
    assert_eq!(
        (&got.username, got.expiration, &got.method, &got.pachd_address, &got.issuer, got.stored_at),
        (&want.username, want.expiration, &want.method, &want.pachd_address, &want.issuer, want.stored_at)
    );
}

/// Removes everything a test stored under its service, also when the test fails half-way.
struct Cleanup {
    backend: Backend,
    service: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        match self.backend {
            Backend::Keyutils => {
                let prefix = format!("pachagent:{}:", self.service);
                for key in keyutils_keys(&prefix) {
                    let _ = key.invalidate();
                }
            }
            Backend::SecretService => {
                for service in [self.service.clone(), format!("{}:probe", self.service)] {
                    let _ = Command::new("secret-tool").args(["clear", "service", &service]).status();
                }
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Shared behaviour, run against each real backend.

async fn round_trip_save_load_overwrite_delete(store: &Store) {
    let first = session("token-one-1111111111111111111111");
    store.save("prod", &first).await.unwrap();
    assert_same(&store.load("prod").await.unwrap().expect("saved session"), &first);

    let mut second = session("token-two-2222222222222222222222");
    second.expiration = None;
    second.issuer = None;
    second.method = "pach-token".to_owned();
    store.save("prod", &second).await.unwrap();
    assert_same(&store.load("prod").await.unwrap().expect("overwritten session"), &second);

    // Another context is another entry.
    let other = session("token-dev-3333333333333333333333");
    store.save("team:dev/eu", &other).await.unwrap();
    assert_same(&store.load("team:dev/eu").await.unwrap().unwrap(), &other);
    assert_same(&store.load("prod").await.unwrap().unwrap(), &second);

    assert!(store.delete("prod").await.unwrap(), "an entry existed");
    assert!(store.load("prod").await.unwrap().is_none());
    assert!(!store.delete("prod").await.unwrap(), "nothing left to delete");
    assert!(store.delete("team:dev/eu").await.unwrap());
}

async fn missing_entries(store: &Store) {
    assert!(store.load("never-saved").await.unwrap().is_none());
    assert!(!store.delete("never-saved").await.unwrap());
    store.probe().await.unwrap();
}

/// Writes `raw` as a context's entry behind the store's back, then checks what `load` makes of it.
async fn versioning(store: &Store, write_raw: impl Fn(&str, &str)) {
    let token = "token-ver-4444444444444444444444";
    write_raw(
        "later-fields",
        &format!(
            r#"{{"v":1,"pach_token":"{token}","username":"u","expiration":null,"method":"pachd",
                "pachd_address":"localhost:30650","stored_at":7,"added_in_1_9":{{"x":[1,2]}}}}"#
        ),
    );
    let loaded = store.load("later-fields").await.unwrap().expect("a v1 record with extra fields");
    assert_eq!((loaded.pach_token.expose_secret(), loaded.stored_at), (token, 7));

    write_raw("newer", &format!(r#"{{"v":2,"pach_token":"{token}","shape":"new"}}"#));
    let err = store.load("newer").await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { ref context, .. } if context == "newer"), "{err:?}");
    assert!(err.to_string().contains("a newer pachagent wrote it"), "{err}");
    assert!(!err.to_string().contains(token) && !format!("{err:?}").contains(token), "{err}");

    write_raw("garbage", &format!("{token} is not a record"));
    let err = store.load("garbage").await.unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    assert!(!err.to_string().contains(token), "{err}");

    // A bad entry can still be replaced and removed.
    store.save("newer", &session(token)).await.unwrap();
    assert!(store.load("newer").await.unwrap().is_some());
    for context in ["later-fields", "newer", "garbage"] {
        assert!(store.delete(context).await.unwrap(), "{context}");
    }
}

async fn secrets_never_show_in_debug_or_errors(store: &Store) {
    let token = "token-dbg-5555555555555555555555";
    store.save("debug", &session(token)).await.unwrap();
    let loaded = store.load("debug").await.unwrap().unwrap();
    let shown = format!("{loaded:?} {store:?} {:?}", store.load("debug").await);
    assert!(!shown.contains(token), "{shown}");
    assert!(shown.contains("PachToken([redacted])"), "{shown}");
    store.delete("debug").await.unwrap();
}

// ---------------------------------------------------------------------------------------------------------------
// keyutils

/// The keys in `@u` whose description starts with `prefix`.
fn keyutils_keys(prefix: &str) -> Vec<Key> {
    let Ok(user) = KeyRing::from_special_id(KeyRingIdentifier::User, true) else { return Vec::new() };
    let Ok(links) = user.get_links(4096) else { return Vec::new() };
    links
        .iter()
        .filter_map(|node| node.as_key())
        .filter(|key| key.metadata().is_ok_and(|m| m.get_description().starts_with(prefix)))
        .collect()
}

fn keyutils_key(service: &str, context: &str) -> Option<Key> {
    let user = KeyRing::from_special_id(KeyRingIdentifier::User, true).unwrap();
    user.search(&format!("pachagent:{service}:{context}")).ok()
}

/// Writes a key as another program of the same user would, readable by the uid.
fn keyutils_write_raw(service: &str, context: &str, payload: &str) {
    let user = KeyRing::from_special_id(KeyRingIdentifier::User, true).unwrap();
    let thread = KeyRing::from_special_id(KeyRingIdentifier::Thread, true).unwrap();
    let key = thread.add_key(&format!("pachagent:{service}:{context}"), payload).unwrap();
    key.set_perms(KeyPermissionsBuilder::builder().posessor(Permission::ALL).user(Permission::ALL).build()).unwrap();
    user.link_key(key).unwrap();
    thread.unlink_key(key).unwrap();
}

async fn keyutils_store() -> (Store, Cleanup) {
    let service = unique_service();
    let store = Store::open(StoreChoice::Keyutils, &service).await.expect("the kernel user keyring");
    assert_eq!(store.backend(), Backend::Keyutils);
    assert!(!store.backend().persistent());
    assert_eq!(store.service(), service);
    (store, Cleanup { backend: Backend::Keyutils, service })
}

#[tokio::test]
async fn keyutils_saves_loads_overwrites_and_deletes() {
    let (store, _cleanup) = keyutils_store().await;
    round_trip_save_load_overwrite_delete(&store).await;
}

#[tokio::test]
async fn keyutils_missing_entries_load_as_none() {
    let (store, _cleanup) = keyutils_store().await;
    missing_entries(&store).await;
}

#[tokio::test]
async fn keyutils_reads_records_by_version() {
    let (store, _cleanup) = keyutils_store().await;
    let service = store.service().to_owned();
    versioning(&store, |context, raw| keyutils_write_raw(&service, context, raw)).await;
}

#[tokio::test]
async fn keyutils_never_shows_the_token_in_debug() {
    let (store, _cleanup) = keyutils_store().await;
    secrets_never_show_in_debug_or_errors(&store).await;
}

#[tokio::test]
async fn keyutils_keys_live_in_the_user_keyring_open_to_their_uid_and_are_updated_in_place() {
    let (store, _cleanup) = keyutils_store().await;
    store.save("prod", &session("token-perm-666666666666666666666")).await.unwrap();
    let key = keyutils_key(store.service(), "prod").expect("a key in @u named pachagent:<service>:<context>");
    let meta = key.metadata().unwrap();
    let user_perms = (meta.get_perms().bits() >> 16) & 0xff;
    let wanted = Permission::VIEW | Permission::READ | Permission::WRITE | Permission::SEARCH | Permission::SETATTR;
    assert_eq!(user_perms & u32::from(wanted.bits()), u32::from(wanted.bits()), "user perms {user_perms:#x}");
    assert_eq!(meta.get_uid(), own_uid());

    // Overwriting keeps the same key: no delete-then-add, which would hit the quota.
    store.save("prod", &session("token-perm-777777777777777777777")).await.unwrap();
    let again = keyutils_key(store.service(), "prod").unwrap();
    assert_eq!(again.get_id(), key.get_id());
    assert_eq!(
        store.load("prod").await.unwrap().unwrap().pach_token.expose_secret(),
        "token-perm-777777777777777777777"
    );

    // Nothing is left behind in this process's own keyrings.
    assert!(store.delete("prod").await.unwrap());
    assert!(keyutils_key(store.service(), "prod").is_none());
}

/// The uid of this process, read from /proc rather than through `unsafe` libc calls.
fn own_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn keyutils_takes_a_record_near_the_kernel_limit_and_refuses_a_larger_one() {
    let (store, _cleanup) = keyutils_store().await;
    // Just under the kernel's 32,767-byte payload limit for root. An ordinary user's whole quota is 20,000 bytes,
    // shared with the tests running beside this one, so there just over one page (the limit of KEYCTL_UPDATE).
    let address_len = if own_uid() == 0 { 32_767 - 400 } else { 4200 };
    let mut big = session("token-big-888888888888888888888");
    big.pachd_address = format!("grpc://{}:30650", "p".repeat(address_len));
    store.save("big", &big).await.unwrap();
    assert_same(&store.load("big").await.unwrap().unwrap(), &big);
    let serial = keyutils_key(store.service(), "big").unwrap().get_id();

    // Updating in place works past one page (KEYCTL_UPDATE would refuse anything over 4096 bytes).
    big.pach_token = PachToken::new("token-big-999999999999999999999".to_owned());
    store.save("big", &big).await.unwrap();
    assert_same(&store.load("big").await.unwrap().unwrap(), &big);
    assert_eq!(keyutils_key(store.service(), "big").unwrap().get_id(), serial);

    let mut huge = big.clone();
    huge.pachd_address = "h".repeat(32_767);
    let err = store.save("big", &huge).await.unwrap_err();
    assert!(matches!(err, Error::TooLarge { backend: Backend::Keyutils, limit: 32_767, .. }), "{err:?}");
    assert!(err.to_string().contains("\"big\""), "{err}");
    assert_same(&store.load("big").await.unwrap().unwrap(), &big);
}

/// A daemon started outside a PAM login has a session keyring that does not link `@u`, so it does not
/// *possess* the keys there. It must still read and update what another process of the same user wrote, and what
/// it writes must be readable by others. The child runs under `keyctl session -`, a fresh anonymous session.
/// A session whose record is larger than one page, the most KEYCTL_UPDATE takes.
fn page_sized(mut session: StoredSession) -> StoredSession {
    session.pachd_address = format!("grpc://{}:30650", "q".repeat(4200));
    session
}

#[tokio::test]
async fn keyutils_works_from_a_session_that_does_not_possess_the_user_keyring() {
    let (store, _cleanup) = keyutils_store().await;
    store.save("written-by-parent", &page_sized(session("token-parent-0000000000000000000"))).await.unwrap();

    run_child(
        "child_keyutils_in_a_foreign_session",
        &["keyctl", "session", "-"],
        &[(SERVICE_ENV, store.service().to_owned())],
        &[],
    );

    let updated = store.load("written-by-parent").await.unwrap().expect("still there");
    assert_eq!(updated.pach_token.expose_secret(), "token-updated-by-child-000000000");
    let created = store.load("written-by-child").await.unwrap().expect("created by the child");
    assert_eq!(created.pach_token.expose_secret(), "token-child-00000000000000000000");
    assert!(store.delete("written-by-child").await.unwrap());
}

#[tokio::test]
#[ignore = "child process of keyutils_works_from_a_session_that_does_not_possess_the_user_keyring"]
async fn child_keyutils_in_a_foreign_session() {
    child_only("child_keyutils_in_a_foreign_session");
    let session_ring = KeyRing::from_special_id(KeyRingIdentifier::Session, false).unwrap();
    let user = KeyRing::from_special_id(KeyRingIdentifier::User, false).unwrap();
    assert!(
        !session_ring.get_links(4096).unwrap().contains(&user),
        "precondition: this session keyring must not link @u (run under `keyctl session -`)"
    );
    let service = std::env::var(SERVICE_ENV).unwrap();
    let store = Store::open(StoreChoice::Keyutils, &service).await.unwrap();

    let from_parent = store.load("written-by-parent").await.unwrap().expect("the parent's entry");
    assert_eq!(from_parent.pach_token.expose_secret(), "token-parent-0000000000000000000");
    store.save("written-by-parent", &page_sized(session("token-updated-by-child-000000000"))).await.unwrap();
    store.save("written-by-child", &session("token-child-00000000000000000000")).await.unwrap();
    let mine = store.load("written-by-child").await.unwrap().expect("readable right after writing");
    assert_eq!(mine.pach_token.expose_secret(), "token-child-00000000000000000000");
    assert!(!store.delete("never-written").await.unwrap());
}

// ---------------------------------------------------------------------------------------------------------------
// Secret Service (gnome-keyring)

/// A store on the session bus's Secret Service, or a failure that says how to get one.
async fn secret_service_store() -> (Store, Cleanup) {
    let bus = std::env::var("DBUS_SESSION_BUS_ADDRESS").unwrap_or_default();
    assert!(!bus.is_empty(), "no D-Bus session bus (DBUS_SESSION_BUS_ADDRESS is unset); {HOW_TO_RUN}");
    let service = unique_service();
    let store = match Store::open(StoreChoice::SecretService, &service).await {
        Ok(store) => store,
        Err(e) => panic!("no usable Secret Service on the session bus {bus}: {e}; {HOW_TO_RUN}"),
    };
    assert_eq!(store.backend(), Backend::SecretService);
    assert!(store.backend().persistent());
    (store, Cleanup { backend: Backend::SecretService, service })
}

fn secret_tool(args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = Command::new("secret-tool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run secret-tool ({e}): apt-get install libsecret-tools"));
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "secret-tool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Writes an item the way `keyring` looks for it: attributes service, username and target=default.
fn secret_service_write_raw(service: &str, context: &str, payload: &str) {
    let label = format!("{context}@{service} (written by a test)");
    secret_tool(
        &["store", "--label", &label, "service", service, "username", context, "target", "default"],
        Some(payload),
    );
}

#[tokio::test]
async fn secret_service_saves_loads_overwrites_and_deletes() {
    let (store, _cleanup) = secret_service_store().await;
    round_trip_save_load_overwrite_delete(&store).await;
}

#[tokio::test]
async fn secret_service_missing_entries_load_as_none() {
    let (store, _cleanup) = secret_service_store().await;
    missing_entries(&store).await;
}

#[tokio::test]
async fn secret_service_reads_records_by_version() {
    let (store, _cleanup) = secret_service_store().await;
    let service = store.service().to_owned();
    versioning(&store, |context, raw| secret_service_write_raw(&service, context, raw)).await;
}

#[tokio::test]
async fn secret_service_never_shows_the_token_in_debug() {
    let (store, _cleanup) = secret_service_store().await;
    secrets_never_show_in_debug_or_errors(&store).await;
}

/// The entry is in the real keyring, where other tools find it by service and account: not in a mock.
#[tokio::test]
async fn secret_service_entries_are_real_keyring_items_holding_a_small_v1_record() {
    let (store, _cleanup) = secret_service_store().await;
    store.save("prod", &session("token-real-999999999999999999999")).await.unwrap();
    let raw = secret_tool(&["lookup", "service", store.service(), "username", "prod"], None);
    let value: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(value["v"], 1);
    assert_eq!(value["pach_token"], "token-real-999999999999999999999");
    assert!(value.get("id_token").is_none());
    assert!(raw.len() < 1024, "{} bytes", raw.len());
    // The probe leaves nothing behind.
    store.probe().await.unwrap();
    let probe_service = format!("{}:probe", store.service());
    let found = Command::new("secret-tool").args(["search", "service", &probe_service]).output().unwrap();
    assert!(String::from_utf8_lossy(&found.stdout).trim().is_empty(), "probe item left behind");
}

#[tokio::test]
async fn auto_picks_the_secret_service_when_the_session_bus_offers_one() {
    let (_store, _cleanup) = secret_service_store().await;
    let service = unique_service();
    let _auto_cleanup = Cleanup { backend: Backend::SecretService, service: service.clone() };
    let store = Store::open(StoreChoice::Auto, &service).await.unwrap();
    assert_eq!(store.backend(), Backend::SecretService);
}

/// A locked collection must give `Locked` (or `TimedOut`) within seconds, never hang. The child gets its own
/// bus and gnome-keyring, so locking does not disturb tests running beside it.
#[tokio::test]
async fn a_locked_secret_service_answers_locked_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    run_in_private_keyring("child_locked_secret_service", dir.path());
}

#[tokio::test]
#[ignore = "child process of a_locked_secret_service_answers_locked_within_seconds"]
async fn child_locked_secret_service() {
    child_only("child_locked_secret_service");
    let service = unique_service();
    let store = Store::open(StoreChoice::SecretService, &service).await.unwrap();
    store.save("held", &session("token-held-aaaaaaaaaaaaaaaaaaaaaa")).await.unwrap();

    let collection = bus_call(&[
        "--dest=org.freedesktop.secrets",
        "/org/freedesktop/secrets",
        "org.freedesktop.Secret.Service.ReadAlias",
        "string:default",
    ]);
    let collection = collection.trim().to_owned();
    bus_call(&[
        "--dest=org.freedesktop.secrets",
        "/org/freedesktop/secrets",
        "org.freedesktop.Secret.Service.Lock",
        &format!("array:objpath:{collection}"),
    ]);
    let locked = bus_call(&[
        "--dest=org.freedesktop.secrets",
        &collection,
        "org.freedesktop.DBus.Properties.Get",
        "string:org.freedesktop.Secret.Collection",
        "string:Locked",
    ]);
    assert!(locked.contains("true"), "the collection {collection} did not lock: {locked}");

    let is_locked = |e: &Error| {
        matches!(
            e,
            Error::Locked { backend: Backend::SecretService } | Error::TimedOut { backend: Backend::SecretService, .. }
        )
    };
    let e = answers("load", store.load("held")).await.unwrap_err();
    assert!(is_locked(&e), "{e:?}");
    let e = answers("load of a missing entry", store.load("never")).await;
    // A search for a missing item does not need the collection unlocked, so this may succeed with None.
    assert!(matches!(e, Ok(None)) || e.as_ref().is_err_and(is_locked), "{e:?}");
    let e = answers("save over an entry", store.save("held", &session("token-new-bbbbbbbbbbbbbbbbbbbbbb"))).await;
    assert!(e.as_ref().is_err_and(is_locked), "{e:?}");
    let e = answers("save of a new entry", store.save("fresh", &session("token-new-cccccccccccccccccccccc"))).await;
    assert!(e.as_ref().is_err_and(is_locked), "{e:?}");
    let e = answers("delete", store.delete("held")).await;
    assert!(e.as_ref().is_err_and(is_locked), "{e:?}");
    let e = answers("probe", store.probe()).await;
    assert!(e.as_ref().is_err_and(is_locked), "{e:?}");
    let e = answers("open secret-service", Store::open(StoreChoice::SecretService, &service)).await;
    assert!(e.as_ref().is_err_and(is_locked), "{:?}", e.map(|s| s.backend()));
    // `auto` keeps the locked Secret Service: the user's sessions are there once it is unlocked.
    let auto = answers("open auto", Store::open(StoreChoice::Auto, &service)).await.unwrap();
    assert_eq!(auto.backend(), Backend::SecretService);
    let e = store.load("held").await.unwrap_err();
    assert!(e.to_string().contains("locked: unlock it"), "{e}");
}

/// A Secret Service that stops answering (here: gnome-keyring frozen with SIGSTOP) gives `TimedOut` after
/// about five seconds; `auto` then falls back to keyutils; and the store recovers once the service answers again.
#[tokio::test]
async fn a_frozen_secret_service_times_out_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    run_in_private_keyring("child_frozen_secret_service", dir.path());
}

#[tokio::test]
#[ignore = "child process of a_frozen_secret_service_times_out_instead_of_hanging"]
async fn child_frozen_secret_service() {
    child_only("child_frozen_secret_service");
    let service = unique_service();
    let store = Store::open(StoreChoice::SecretService, &service).await.unwrap();
    store.save("held", &session("token-held-dddddddddddddddddddddd")).await.unwrap();

    let pid = bus_call(&[
        "--dest=org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus.GetConnectionUnixProcessID",
        "string:org.freedesktop.secrets",
    ]);
    let pid = pid.split_whitespace().last().unwrap().to_owned();
    let frozen = Frozen::new(&pid);

    let e = answers("load", store.load("held")).await.unwrap_err();
    assert!(matches!(e, Error::TimedOut { backend: Backend::SecretService, seconds: 5 }), "{e:?}");
    let e = answers("probe", store.probe()).await.unwrap_err();
    assert!(matches!(e, Error::TimedOut { .. }), "{e:?}");
    let auto = answers("open auto", Store::open(StoreChoice::Auto, &service)).await.unwrap();
    assert_eq!(auto.backend(), Backend::Keyutils);

    drop(frozen);
    let back = store.load("held").await.unwrap().expect("readable again");
    assert_eq!(back.pach_token.expose_secret(), "token-held-dddddddddddddddddddddd");
    assert!(store.delete("held").await.unwrap());
}

/// With no reachable bus, the Secret Service is `Unavailable` at once and `auto` uses keyutils.
#[tokio::test]
async fn without_a_session_bus_auto_uses_keyutils_and_the_secret_service_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let nowhere = format!("unix:path={}", dir.path().join("no-bus-here").display());
    run_child("child_without_a_bus", &[], &[("DBUS_SESSION_BUS_ADDRESS", nowhere)], &[]);
    run_child("child_without_a_bus", &[], &[], &["DBUS_SESSION_BUS_ADDRESS"]);
}

#[tokio::test]
#[ignore = "child process of without_a_session_bus_auto_uses_keyutils_and_the_secret_service_is_unavailable"]
async fn child_without_a_bus() {
    child_only("child_without_a_bus");
    let service = unique_service();
    let _cleanup = Cleanup { backend: Backend::Keyutils, service: service.clone() };
    let auto = answers("open auto", Store::open(StoreChoice::Auto, &service)).await.unwrap();
    assert_eq!(auto.backend(), Backend::Keyutils);
    assert!(!auto.backend().persistent());
    auto.save("prod", &session("token-auto-eeeeeeeeeeeeeeeeeeeeee")).await.unwrap();
    assert!(auto.delete("prod").await.unwrap());
    if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some() {
        let e = answers("open secret-service", Store::open(StoreChoice::SecretService, &service)).await.unwrap_err();
        assert!(matches!(e, Error::Unavailable { backend: Backend::SecretService, .. }), "{e:?}");
        assert!(e.to_string().contains("store = \"keyutils\""), "{e}");
    }
    let e = Store::open(StoreChoice::Keychain, &service).await.unwrap_err();
    assert!(matches!(e, Error::Unavailable { backend: Backend::Keychain, .. }), "{e:?}");
}

// ---------------------------------------------------------------------------------------------------------------
// Child processes

/// Fails unless this process was started by the parent test for `name`.
#[track_caller]
fn child_only(name: &str) {
    assert_eq!(
        std::env::var(CHILD_ENV).ok().as_deref(),
        Some(name),
        "{name} is a child process of another test, which prepares its environment; run that test instead"
    );
}

/// Runs the `#[ignore]`d test `name` of this binary, wrapped in `wrapper` (a command that ends by running its
/// arguments), and fails with the child's output unless exactly that test ran and passed.
#[track_caller]
fn run_child(name: &str, wrapper: &[&str], env: &[(&str, String)], env_remove: &[&str]) {
    let exe = std::env::current_exe().unwrap();
    // `timeout` guards the one thing these tests exist to rule out: a hang.
    let mut command = Command::new("timeout");
    command
        .arg("120")
        .args(wrapper)
        .arg(&exe)
        .args(["--exact", name, "--ignored", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, name)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    for key in env_remove {
        command.env_remove(key);
    }
    let out = command.output().unwrap_or_else(|e| panic!("cannot run {wrapper:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("--- child {name} ---\n{text}--- end of child {name} ---");
    assert!(out.status.success(), "child test {name} failed ({}); its output is above", out.status);
    assert!(text.contains("1 passed"), "child test {name} did not run; its output is above");
}

/// Runs a child test in its own D-Bus session with its own gnome-keyring, unlocked, keeping its files in `dir`.
#[track_caller]
fn run_in_private_keyring(name: &str, dir: &Path) {
    for tool in ["dbus-run-session", "gnome-keyring-daemon", "dbus-send"] {
        let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().unwrap();
        assert!(found.status.success(), "{tool} is missing: apt-get install dbus gnome-keyring; {HOW_TO_RUN}");
    }
    let data = dir.join("data");
    let runtime = dir.join("run");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&runtime).unwrap();
    // gnome-keyring-daemon does not always exit when its bus goes away, so the wrapper stops it (waking it first,
    // in case a test froze it).
    let start = r#"printf %s "$PACHAGENT_TEST_KEYRING_PASSWORD" |
            gnome-keyring-daemon --unlock --components=secrets >/dev/null || exit 1
        pid=$(dbus-send --session --print-reply=literal --dest=org.freedesktop.DBus /org/freedesktop/DBus \
            org.freedesktop.DBus.GetConnectionUnixProcessID string:org.freedesktop.secrets | awk '{ print $2 }')
        "$@"; rc=$?
        [ -z "$pid" ] || { kill -CONT "$pid"; kill "$pid"; } 2>/dev/null
        exit $rc"#;
    run_child(
        name,
        &["dbus-run-session", "--", "sh", "-c", start, "sh"],
        &[
            ("XDG_DATA_HOME", data.display().to_string()),
            ("XDG_RUNTIME_DIR", runtime.display().to_string()),
            ("PACHAGENT_TEST_KEYRING_PASSWORD", "pachagent-test".to_owned()),
        ],
        &["GNOME_KEYRING_CONTROL", "DBUS_SESSION_BUS_ADDRESS"],
    );
}

/// Calls a D-Bus method on the session bus with `dbus-send` and returns its literal reply.
#[track_caller]
fn bus_call(args: &[&str]) -> String {
    let out = Command::new("dbus-send")
        .args(["--session", "--print-reply=literal"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run dbus-send ({e}): apt-get install dbus"));
    assert!(out.status.success(), "dbus-send {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Awaits `op`, failing if it takes longer than [`ANSWER_WITHIN`], and logs what it returned and when.
async fn answers<T: std::fmt::Debug, F: std::future::Future<Output = Result<T, Error>>>(
    what: &str,
    op: F,
) -> Result<T, Error> {
    let start = Instant::now();
    let result = tokio::time::timeout(ANSWER_WITHIN, op)
        .await
        .unwrap_or_else(|_| panic!("{what} did not answer within {ANSWER_WITHIN:?}"));
    match &result {
        Ok(_) => eprintln!("{what}: ok after {:?}", start.elapsed()),
        Err(e) => eprintln!("{what}: error after {:?}: {e}", start.elapsed()),
    }
    result
}

/// A process stopped with SIGSTOP until this is dropped.
struct Frozen(String);

impl Frozen {
    fn new(pid: &str) -> Self {
        // The shell's `kill` builtin: /usr/bin/kill (procps) is not on every machine.
        let status = Command::new("sh").args(["-c", "kill -STOP \"$1\"", "sh", pid]).status().unwrap();
        assert!(status.success(), "kill -STOP {pid}");
        Frozen(pid.to_owned())
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = Command::new("sh").args(["-c", "kill -CONT \"$1\"", "sh", &self.0]).status();
    }
}
