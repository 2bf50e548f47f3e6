//! The session store against real OS stores: the kernel user keyring (`@u`) and a real gnome-keyring over D-Bus.
//!
//! The Secret Service tests need the session bus with an unlocked gnome-keyring that `scripts/test.sh` sets up;
//! without one they fail and print the command to run, they never skip. What needs an environment of its own (a
//! locked or a frozen gnome-keyring, a session keyring that does not possess `@u`, no bus at all) is tested
//! through the real agent in `tests/keyring_faults.rs`.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use linux_keyutils::{Key, KeyPermissionsBuilder, KeyRing, KeyRingIdentifier, Permission};
use pachagent::config::StoreChoice;
use pachagent::secret::PachToken;
use pachagent::store::{Backend, Error, Store, StoredSession};

/// How to get a session bus with an unlocked Secret Service.
const HOW_TO_RUN: &str = "run the tests with `scripts/test.sh`, which installs dbus, gnome-keyring, libsecret-tools \
    and keyutils when missing and runs them in a private D-Bus session with a throwaway, unlocked gnome-keyring";

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A service name no other test, run or process uses.
fn unique_service() -> String {
    format!("pachagent-test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

fn session(token: &str) -> StoredSession {
    StoredSession {
        pach_token: PachToken::new(token.to_owned()),
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

/// An agent's `status` may probe while an earlier probe is still running: one that gave up on a frozen keyring
/// goes on when the keyring wakes, since a timeout cannot stop its thread. Probes at the same time must all pass
/// and leave nothing behind.
#[tokio::test(flavor = "multi_thread")]
async fn secret_service_probes_at_the_same_time_in_one_process_all_pass() {
    let (store, _cleanup) = secret_service_store().await;
    let probes: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.probe().await })
        })
        .collect();
    for probe in probes {
        probe.await.unwrap().unwrap();
    }
    let probe_service = format!("{}:probe", store.service());
    let found = Command::new("secret-tool").args(["search", "service", &probe_service]).output().unwrap();
    assert!(String::from_utf8_lossy(&found.stdout).trim().is_empty(), "probe items left behind");
}

#[tokio::test]
async fn auto_picks_the_secret_service_when_the_session_bus_offers_one() {
    let (_store, _cleanup) = secret_service_store().await;
    let service = unique_service();
    let _auto_cleanup = Cleanup { backend: Backend::SecretService, service: service.clone() };
    let store = Store::open(StoreChoice::Auto, &service).await.unwrap();
    assert_eq!(store.backend(), Backend::SecretService);
}
