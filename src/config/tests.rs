use super::*;

fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn pachd_addresses_are_read_the_way_pachctl_reads_them() {
    let cases = [
        ("localhost", "grpc://localhost:30650", false),
        ("grpc://localhost:80", "grpc://localhost:80", false),
        ("grpcs://pachd.example.com", "grpcs://pachd.example.com:30650", true),
        ("https://pachd.example.com:443/", "grpcs://pachd.example.com:443", true),
        ("http://10.0.0.1:30650", "grpc://10.0.0.1:30650", false),
        ("[::1]:1650", "grpc://[::1]:1650", false),
        ("grpc://[::1]", "grpc://[::1]:30650", false),
        ("::1", "grpc://[::1]:30650", false),
        ("grpc://[fe80::1%eth0]:80", "grpc://[fe80::1%eth0]:80", false),
        ("pachd_svc.default:650", "grpc://pachd_svc.default:650", false),
    ];
    for (input, canonical, tls) in cases {
        let a = PachdAddress::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(a.to_string(), canonical, "{input}");
        assert_eq!(a.tls, tls, "{input}");
    }
    assert_eq!(PachdAddress::parse("grpcs://h:443").unwrap().endpoint_uri(), "https://h:443");
}

#[test]
fn pachd_addresses_with_paths_users_queries_or_bad_ports_are_refused_with_the_reason() {
    for (input, why) in [
        ("grpc://host:30650/path", "no path"),
        ("grpc://alice@host", "no path, user"),
        ("grpc://host?x=1", "no path, user, query"),
        ("ftp://host", "unknown scheme"),
        ("unix:///run/pachd.sock", "unix sockets are not supported"),
        ("grpc://host:99999", "not a number from 1 to 65535"),
        ("grpc://host:0", "not a number from 1 to 65535"),
        ("", "empty"),
        ("grpc://:80", "no host"),
        // Found by fuzzing: a name with ']' and stray colons was once taken for an IPv6 host.
        ("grpcs://pachd.examp]le.com:44:3", "is not an IPv6 address"),
        ("grpc://[pachd.example.com]:80", "is not an IPv6 address"),
        ("grpc://pach d:80", "contains ' '"),
        ("grpc://pachd]:80", "contains ']'"),
    ] {
        let err = PachdAddress::parse(input).expect_err(input);
        assert!(err.contains(why), "{input}: {err}");
    }
}

#[test]
fn a_missing_file_is_an_empty_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::load(&dir.path().join("nope.toml")).unwrap();
    assert!(cfg.contexts.is_empty());
    assert!(matches!(cfg.context(""), Err(Error::NoActiveContext)));
}

#[test]
fn a_full_file_resolves_with_defaults_applied() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        r#"
active_context = "prod"
store = "keyutils"
[contexts.prod]
pachd_address = "grpcs://pachd.example.com:443"
issuer = "https://tenant.auth0.com/"
client_id = "pachagent"
scopes = ["offline_access"]
redirect_port = 8765
[contexts.local]
pachd_address = "localhost"
"#,
    );
    let cfg = Config::load(&path).unwrap();
    assert_eq!(cfg.store, StoreChoice::Keyutils);
    assert_eq!(cfg.keyring_service, "pachagent");
    let prod = cfg.context("").unwrap();
    assert_eq!(prod.name, "prod");
    assert_eq!(prod.method, Method::Oidc);
    assert_eq!(prod.redirect_ports, [8765]);
    assert_eq!(prod.redirect_host, RedirectHost::Loopback);
    assert_eq!(prod.all_scopes(), ["openid", "email", "profile", "offline_access"]);
    assert_eq!(prod.refresh_margin, DEFAULT_REFRESH_MARGIN);
    assert_eq!(prod.expiry_warnings, DEFAULT_EXPIRY_WARNINGS);
    assert!(!prod.sync_pachctl);
    let local = cfg.context("local").unwrap();
    assert_eq!(local.method, Method::Pachd, "no issuer means pachctl's own flow");
    assert_eq!(local.pachd.to_string(), "grpc://localhost:30650");
}

#[test]
fn unknown_keys_are_refused_naming_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "[contexts.prod]\npachd_address = \"localhost\"\nisuer = \"https://x\"\n");
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("isuer"), "{err}");
}

#[test]
fn bad_values_are_refused_naming_the_context_key_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "[contexts.prod]\npachd_address = \"grpc://h/x\"\n");
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(err.contains("\"prod\"") && err.contains("pachd_address") && err.contains("no path"), "{err}");

    let path = write(&dir, "[contexts.prod]\npachd_address = \"h\"\nca_file = \"/ca.pem\"\n");
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(err.contains("ca_file") && err.contains("grpcs://"), "{err}");

    let path = write(&dir, "[contexts.prod]\npachd_address = \"h\"\nmethod = \"oidc\"\n");
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(err.contains("issuer and client_id"), "{err}");

    let path = write(&dir, "[contexts.prod]\npachd_address = \"h\"\nrefresh_margin = \"soon\"\n");
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(err.contains("refresh_margin") && err.contains("not a duration"), "{err}");

    let path = write(&dir, "store = \"plaintext\"\n");
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(err.contains("plaintext"), "{err}");

    let path = write(&dir, "active_context = \"ghost\"\n");
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(err.contains("ghost"), "{err}");
}

#[test]
fn context_commands_edit_the_file_owner_only_and_keep_other_contexts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("config.toml");
    let cfg = Config::add_context(&path, "a", NewContext { pachd_address: "h1".into(), ..Default::default() }).unwrap();
    assert_eq!(cfg.active_context.as_deref(), Some("a"), "the first context becomes active");
    let cfg =
        Config::add_context(&path, "b", NewContext { pachd_address: "grpcs://h2:443".into(), ..Default::default() })
            .unwrap();
    assert_eq!(cfg.active_context.as_deref(), Some("a"));
    assert!(matches!(
        Config::add_context(&path, "b", NewContext { pachd_address: "h".into(), ..Default::default() }),
        Err(Error::Exists(_))
    ));
    let cfg = Config::use_context(&path, "b").unwrap();
    assert_eq!(cfg.context("").unwrap().pachd.to_string(), "grpcs://h2:443");
    let cfg = Config::remove_context(&path, "b").unwrap();
    assert_eq!(cfg.active_context, None);
    assert_eq!(Config::load(&path).unwrap().contexts.keys().collect::<Vec<_>>(), ["a"]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
}

#[test]
fn context_names_that_would_break_keyring_entries_or_shells_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    for name in ["", "a b", "x/y", "ünï"] {
        let err = Config::add_context(&path, name, NewContext { pachd_address: "h".into(), ..Default::default() });
        assert!(matches!(err, Err(Error::BadValue(_))), "{name:?}");
    }
}

#[test]
fn the_socket_and_config_paths_follow_flags_then_xdg() {
    assert_eq!(socket_path(Some(Path::new("/x/s.sock"))), PathBuf::from("/x/s.sock"));
    assert_eq!(config_path(Some(Path::new("/x/c.toml"))), PathBuf::from("/x/c.toml"));
    let sock = socket_path(None);
    assert!(sock.ends_with("agent.sock"), "{}", sock.display());
}
