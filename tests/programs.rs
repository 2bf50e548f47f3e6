//! pachagent is one command made of several programs (src/programs.rs): the front `pachagent`, which answers
//! `token` and `whoami` itself, `pachagent-cli` for every other command, the agent `pachagentd`, and the agent's
//! helpers. To a user they are one command: the same answers, messages and exit codes whichever program answers,
//! and `pachagent serve` is the agent.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;

use support::{CliOutput, Keyring, PachdDev, TestAgent};

const FRONT: &str = env!("CARGO_BIN_EXE_pachagent");
const CLI: &str = env!("CARGO_BIN_EXE_pachagent-cli");
const AGENT: &str = env!("CARGO_BIN_EXE_pachagentd");

/// The front's answer and the full CLI's answer to the same command line, which must be identical.
#[track_caller]
fn both(agent: &TestAgent, args: &[&str]) -> CliOutput {
    let front = agent.run_program(Path::new(FRONT), args, None);
    let cli = agent.run_program(Path::new(CLI), args, None);
    assert_eq!(
        (front.code, &front.stdout, &front.stderr),
        (cli.code, &cli.stdout, &cli.stderr),
        "`pachagent {}`: the front and pachagent-cli answer differently",
        args.join(" ")
    );
    front
}

#[tokio::test(flavor = "multi_thread")]
async fn token_and_whoami_answer_the_same_from_the_front_as_from_the_full_cli_in_success_and_failure() {
    let pachd = PachdDev::start(None, None);
    let mut agent = TestAgent::new(Keyring::Keyutils);
    agent.add_context("dev", &pachd.address, &[]);
    agent.add_context("other", &pachd.address, &[]);
    agent.start();
    let robot = pachd.robot_token("ci", 3600).await;
    agent.cli_stdin(&["login", "--token-stdin"], &format!("{robot}\n")).ok();

    assert_eq!(both(&agent, &["token"]).ok().stdout, format!("{robot}\n"));
    assert_eq!(both(&agent, &["token", "--min-valid", "10m", "--json"]).ok().json()["token"], robot.as_str());
    assert!(both(&agent, &["whoami"]).ok().stdout.starts_with("You are \"robot:ci\"\n"));
    assert_eq!(both(&agent, &["--json", "whoami", "--verify"]).ok().json()["username"], "robot:ci");

    // A session that cannot last as long as asked, a context without a session, one that does not exist.
    let too_long = both(&agent, &["token", "--min-valid", "2h"]);
    assert_ne!(too_long.code, 0, "{too_long:#?}");
    assert_eq!(both(&agent, &["whoami", "--context", "other"]).code, 1);
    assert_eq!(both(&agent, &["token", "--context=nosuch"]).code, 2);
    // Usage errors and help come from the one definition of the command line.
    assert_eq!(both(&agent, &["token", "--min-valid", "soon"]).code, 2);
    assert!(both(&agent, &["token", "--help"]).ok().stdout.contains("--min-valid"));

    agent.stop();
    let gone = both(&agent, &["token"]);
    assert_eq!(gone.code, 3, "{gone:#?}");
    assert!(gone.stderr.contains("pachagent login --context dev"), "names the context to log in to: {gone:#?}");
}

/// `RUST_LOG` is how a user finds out what a command does: the front hands such command lines to pachagent-cli,
/// which logs (here, which socket it called), and the answer is the same.
#[tokio::test(flavor = "multi_thread")]
async fn token_with_rust_log_shows_the_logs_and_the_same_answer() {
    let pachd = PachdDev::start(None, None);
    let mut agent = TestAgent::new(Keyring::Keyutils);
    agent.add_context("dev", &pachd.address, &[]);
    agent.start();
    let robot = pachd.robot_token("ci", 3600).await;
    agent.cli_stdin(&["login", "--token-stdin"], &format!("{robot}\n")).ok();

    agent.env("RUST_LOG", "pachagent=debug");
    let logged = agent.run_program(Path::new(FRONT), &["token"], None);
    assert_eq!(logged.ok().stdout, format!("{robot}\n"));
    assert!(logged.stderr.contains("calling the agent"), "{logged:#?}");
    assert!(!logged.stderr.contains(&robot), "the token is never logged: {logged:#?}");
}

/// The agent is resident for the whole session, so what it maps counts for as long: it does not map the C maths
/// library, which the one maths function it uses (tokio's `pow`) would otherwise keep mapped (~0.45 MB), nor gcc's
/// shared unwinder, which its programs link in instead (build/link.rs).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn the_running_agent_maps_neither_the_c_maths_library_nor_the_shared_unwinder() {
    let mut agent = TestAgent::new(Keyring::Keyutils);
    agent.start();
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", agent.agent_pid().unwrap())).unwrap();
    assert!(maps.contains("libc.so"), "the agent's maps were read: {maps}");
    assert!(!maps.contains("libm.so"), "{maps}");
    assert!(!maps.contains("libgcc_s.so"), "{maps}");
    assert_eq!(agent.stop(), Some(0));
}

/// Scripts run `pachagent token` once per token, so the front must start like the smallest program there is: on
/// glibc Linux it is linked statically (build/link.rs), and while it waits on the agent it has mapped no shared
/// library and run no dynamic loader.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn the_front_calls_the_agent_without_loading_a_shared_library() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    listener.set_nonblocking(true).unwrap();
    let mut front = std::process::Command::new(FRONT)
        .arg("whoami")
        .env("PACHAGENT_SOCKET", &socket)
        // With RUST_LOG the front hands its command to pachagent-cli, a dynamic program.
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Connected, it waits for an answer that does not come: past its start-up, in its call.
    let deadline = Instant::now() + Duration::from_secs(20);
    let _connection = loop {
        match listener.accept() {
            Ok((connection, _)) => break connection,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Some(status) = front.try_wait().unwrap() {
                    panic!("the front exited ({status}) before it called the agent");
                }
                assert!(Instant::now() < deadline, "the front did not call the agent within 20 s");
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", front.id()));
    front.kill().unwrap();
    front.wait().unwrap();
    let maps = maps.unwrap();
    assert!(maps.contains("[stack]"), "the front's maps were read: {maps}");
    let is_library = |line: &&str| {
        let name = line.rsplit('/').next().unwrap_or_default();
        name.ends_with(".so") || name.contains(".so.")
    };
    let libraries: Vec<&str> = maps.lines().filter(is_library).collect();
    assert!(
        libraries.is_empty(),
        "the front mapped shared libraries (it is linked statically only where glibc's libc.a is installed, e.g. \
         Debian's libc6-dev, and PACHAGENT_DYNAMIC_FRONT is not 1): {libraries:#?}"
    );
}

/// The agent logs in, checks sessions and renews through short-lived helpers (`pachagent-net`), so that HTTP,
/// TLS and the OpenID client are not part of its resident memory: after a browser login (discovery, code
/// exchange, the trade with pachd) and a `whoami --verify` (a call to pachd), the agent holds no network
/// connection and no helper is left running.
#[test]
fn after_a_login_and_a_call_to_pachd_the_agent_holds_no_network_connection_and_no_helper() {
    let (_op, _pachd, agent) = support::renewable_session(std::time::Duration::from_secs(600), Keyring::Keyutils);
    let pid = agent.agent_pid().unwrap();
    let verified = agent.cli(&["whoami", "--verify"]);
    assert_eq!(verified.ok().stdout.lines().next(), Some("You are \"user:alice@example.com\""));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !children_of(pid).is_empty() {
        assert!(std::time::Instant::now() < deadline, "helpers stay: {:?}", children_of(pid));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let tcp = tcp_socket_inodes(pid);
    let held: Vec<String> = socket_inodes_of(pid).into_iter().filter(|inode| tcp.contains(inode)).collect();
    assert!(held.is_empty(), "the agent holds TCP sockets {held:?}");
    assert!(!socket_inodes_of(pid).is_empty(), "the agent's sockets were read (its own Unix socket at least)");
}

/// The inodes of the sockets process `pid` has open.
fn socket_inodes_of(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            target.strip_prefix("socket:[").and_then(|rest| rest.strip_suffix(']')).map(str::to_owned)
        })
        .collect()
}

/// The inodes of every TCP socket (IPv4 and IPv6) in process `pid`'s network namespace.
fn tcp_socket_inodes(pid: u32) -> Vec<String> {
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|line| line.split_whitespace().nth(9).map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The live processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|child| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { return false };
            let mut fields = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace()).into_iter().flatten();
            let (state, ppid) = (fields.next(), fields.next());
            state != Some("Z") && ppid.and_then(|p| p.parse::<u32>().ok()) == Some(pid)
        })
        .collect()
}

#[test]
fn pachagent_serve_is_the_agent_program_under_the_same_pid() {
    let mut agent = TestAgent::new(Keyring::Keyutils);
    agent.start();
    let pid = agent.agent_pid().unwrap();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(exe, Path::new(AGENT).canonicalize().unwrap(), "the process `pachagent serve` started is pachagentd");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(cmdline.starts_with(b"pachagent\0serve"), "it shows as `pachagent serve`: {cmdline:?}");
    assert_eq!(agent.stop(), Some(0));
}

#[test]
fn a_front_installed_without_its_companions_says_what_is_missing_and_how_to_fix_it() {
    let agent = TestAgent::new(Keyring::Keyutils);
    let lonely = agent.dir.path().join("bin").join("pachagent");
    std::fs::create_dir_all(lonely.parent().unwrap()).unwrap();
    std::fs::copy(FRONT, &lonely).unwrap();
    let out = agent.run_program(&lonely, &["status"], None);
    assert_eq!(out.code, 2, "a broken installation is not \"not logged in\" (1): {out:#?}");
    let missing = agent.dir.path().join("bin").join("pachagent-cli");
    assert!(out.stderr.starts_with("pachagent: cannot run ") && !out.stderr.trim_end().contains('\n'), "{out:#?}");
    assert!(out.stderr.contains(&missing.display().to_string()), "names the program it looked for: {out:#?}");
    assert!(out.stderr.contains("cargo install --path ."), "says how to fix it: {out:#?}");
    // The front's own commands still work without pachagent-cli (here: no agent runs, which it says).
    let out = agent.run_program(&lonely, &["token"], None);
    assert_eq!(out.code, 3, "{out:#?}");
}

/// An agent installed without its helpers refuses to start and names what is missing: it would otherwise fail at
/// the first login or renewal, or (with `store = "auto"`) quietly keep sessions in the kernel keyring, where the
/// user's earlier sessions are not and a reboot loses the new ones.
#[test]
fn an_agent_installed_without_its_helpers_refuses_to_start_and_says_which_one_is_missing() {
    let mut agent = TestAgent::new(Keyring::Keyutils);
    std::fs::write(&agent.config, "store = \"auto\"\nkeyring_service = \"pachagent-test-no-helpers\"\n").unwrap();
    // A session bus is announced, so `auto` goes for the Secret Service, through its helper.
    agent.env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus");
    let bin = agent.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let lonely = bin.join("pachagentd");
    std::fs::copy(AGENT, &lonely).unwrap();
    let missing = |out: &CliOutput, helper: &str| {
        assert_eq!(out.code, 2, "the agent did not start, and a service manager would not restart it: {out:#?}");
        assert!(out.stderr.contains(&bin.join(helper).display().to_string()), "names {helper}: {out:#?}");
        assert!(out.stderr.contains("cargo install --path ."), "says how to fix it: {out:#?}");
    };
    let out = agent.run_program(&lonely, &["serve"], None);
    missing(&out, "pachagent-net");
    std::fs::copy(env!("CARGO_BIN_EXE_pachagent-net"), bin.join("pachagent-net")).unwrap();
    let out = agent.run_program(&lonely, &["serve"], None);
    missing(&out, "pachagent-keyring");
    assert!(out.stderr.contains("keyring helper"), "{out:#?}");
}
