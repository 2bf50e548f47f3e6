//! The agent's socket under misuse: bytes that are not gRPC, connections that never speak, a flood of
//! connections, an oversized request and a watcher that never reads. After each, the agent still answers a
//! normal `whoami`, and its memory stays bounded. Real `pachagent` and `pachd-dev` processes, the kernel keyring.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use pachagent::proto::agent::agent_client::AgentClient;
use pachagent::proto::agent::{self as pb, LoginMethod};
use support::{Keyring, PachdDev, TestAgent};

/// The slack allowed on the agent's resident memory across an attack: far above the noise of an allocator
/// keeping freed pages, far below what keeping a little state per connection or event would add up to.
const RSS_MARGIN_KIB: u64 = 20 * 1024;

/// An agent logged in to pachd-dev as `robot:ci`; also returns the robot token.
async fn logged_in_agent(pachd: &PachdDev) -> (TestAgent, String) {
    let mut agent = TestAgent::new(Keyring::Keyutils);
    agent.add_context("dev", &pachd.address, &[]);
    agent.start();
    let token = pachd.robot_token("ci", 0).await;
    agent.cli_stdin(&["login", "--token-stdin"], &format!("{token}\n")).ok();
    (agent, token)
}

#[track_caller]
fn assert_whoami_answers(agent: &TestAgent, after: &str) {
    let who = agent.cli(&["whoami"]);
    assert_eq!(who.code, 0, "whoami after {after}: {who:#?}\nagent log:\n{}", agent.log_text());
    assert_eq!(who.stdout, "You are \"robot:ci\"\n", "whoami after {after}");
}

/// The agent's resident set size, from /proc.
fn rss_kib(agent: &TestAgent) -> u64 {
    let pid = agent.locked_pid().expect("the agent's pid in its lock file");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS in /proc/<pid>/status");
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("VmRSS in kB")
}

/// Reads until the agent closes the connection and returns what it sent; panics if the connection is still open
/// after `within`.
#[track_caller]
fn read_until_closed(stream: &mut UnixStream, within: Duration, what: &str) -> Vec<u8> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the agent kept {what} open for {within:?}; it sent {got:?}");
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return got,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("reading from {what}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_http1_and_foreign_prefaces_are_closed_and_the_agent_keeps_answering() {
    let pachd = PachdDev::start(None, None);
    let (agent, _) = logged_in_agent(&pachd).await;
    let mut noise = Vec::with_capacity(4096);
    let mut x: u32 = 0x2545_f491;
    while noise.len() < 4096 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        noise.extend_from_slice(&x.to_le_bytes());
    }
    let cases: [(&str, &[u8]); 5] = [
        ("random bytes", &noise),
        ("an HTTP/1.1 request", b"GET /pachagent.v1.Agent/WhoAmI HTTP/1.1\r\nHost: localhost\r\n\r\n"),
        ("a TLS client hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03pachagent-is-not-tls-at-all"),
        ("a preface of another HTTP version", b"PRI * HTTP/3.0\r\n\r\nSM\r\n\r\n"),
        ("a preface with a wrong ending", b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"),
    ];
    for (what, bytes) in cases {
        let mut stream = UnixStream::connect(&agent.socket).unwrap();
        // The agent may close before all of it is written; that is one of the answers this test expects.
        let _ = stream.write_all(bytes);
        let answer = read_until_closed(&mut stream, Duration::from_secs(20), what);
        if what == "an HTTP/1.1 request" {
            let text = String::from_utf8_lossy(&answer);
            assert!(text.starts_with("HTTP/1.1 505 "), "an HTTP/1 client is answered in its own protocol: {text:?}");
            assert!(text.contains("speaks gRPC over HTTP/2: use the pachagent CLI"), "{text:?}");
        }
        assert_whoami_answers(&agent, what);
    }
    let log = agent.log_text();
    assert_eq!(log.matches("closed a connection that does not speak gRPC (HTTP/2)").count(), 5, "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_that_never_finish_the_handshake_are_dropped_while_everyone_else_is_served() {
    let pachd = PachdDev::start(None, None);
    let (agent, _) = logged_in_agent(&pachd).await;
    let mut silent: Vec<UnixStream> = (0..300).map(|_| UnixStream::connect(&agent.socket).unwrap()).collect();
    let mut stalled: Vec<UnixStream> = (0..20)
        .map(|_| {
            let mut s = UnixStream::connect(&agent.socket).unwrap();
            s.write_all(&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..12]).unwrap();
            s
        })
        .collect();
    assert_whoami_answers(&agent, "opening 320 connections that never finish the HTTP/2 handshake");
    for (i, stream) in silent.iter_mut().chain(stalled.iter_mut()).enumerate() {
        let sent = read_until_closed(stream, Duration::from_secs(60), &format!("half-open connection {i}"));
        assert!(sent.is_empty(), "the agent answered a client that never sent a request: {sent:?}");
    }
    assert_whoami_answers(&agent, "the half-open connections were dropped");
    let log = agent.log_text();
    assert!(log.contains("closed a connection that sent no gRPC request in time"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_request_is_refused_before_it_is_decoded_and_the_agent_stays_up() {
    let pachd = PachdDev::start(None, None);
    let (agent, _) = logged_in_agent(&pachd).await;
    let mut client = agent.grpc().await;
    // Under tonic's own 4 MiB default, so only the agent's cap can refuse it.
    let huge = "x".repeat(3 << 20);
    let err = client
        .get_token(pb::GetTokenRequest { context: huge, min_valid_seconds: 0, ..Default::default() })
        .await
        .expect_err("a 3 MiB request must be refused");
    // tonic answers OUT_OF_RANGE where the gRPC spec says RESOURCE_EXHAUSTED; either refuses before decoding.
    assert!(matches!(err.code(), tonic::Code::OutOfRange | tonic::Code::ResourceExhausted), "{err:?}");
    assert!(err.message().contains("the limit is: 65536 bytes"), "{err:?}");
    let ok = client
        .get_token(pb::GetTokenRequest { context: "dev".into(), min_valid_seconds: 0, ..Default::default() })
        .await;
    assert_eq!(ok.unwrap().into_inner().username, "robot:ci", "the same client is served normally afterwards");
    assert_whoami_answers(&agent, "a 3 MiB request");
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_connections_opened_and_dropped_leave_the_agents_memory_bounded() {
    let pachd = PachdDev::start(None, None);
    let (agent, _) = logged_in_agent(&pachd).await;
    let churn = |n: usize| {
        for _ in 0..n {
            drop(UnixStream::connect(&agent.socket).unwrap());
        }
        // The listen queue is first in, first out: once this answers, every connection above was taken.
        assert_whoami_answers(&agent, "a burst of connections opened and dropped");
    };
    churn(500);
    let before = rss_kib(&agent);
    churn(10_000);
    let after = rss_kib(&agent);
    assert!(
        after < before + RSS_MARGIN_KIB,
        "the agent grew from {before} KiB to {after} KiB over 10,000 connections opened and dropped"
    );
}

/// A channel to the agent whose HTTP/2 windows are tiny, so that a stream it does not read fills up after a few
/// messages, as a stuck client's would.
async fn channel_that_barely_reads(agent: &TestAgent) -> tonic::transport::Channel {
    let socket = agent.socket.clone();
    tonic::transport::Endpoint::from_static("http://[::]:50051")
        .initial_stream_window_size(Some(1024))
        .initial_connection_window_size(Some(1024))
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(socket).await?))
            }
        }))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watcher_that_never_reads_holds_up_no_one_and_is_told_what_it_missed() {
    let pachd = PachdDev::start(None, None);
    let (agent, token) = logged_in_agent(&pachd).await;
    let watch_all = pb::WatchRequest { context: String::new(), all_contexts: true };

    let mut stuck = AgentClient::new(channel_that_barely_reads(&agent).await);
    let mut stuck_events = stuck.watch(watch_all.clone()).await.unwrap().into_inner();
    let mut reader = agent.grpc().await;
    let mut read_events = reader.watch(watch_all).await.unwrap().into_inner();
    let counted = tokio::spawn(async move {
        let mut logins = 0;
        while let Ok(Some(event)) = read_events.message().await {
            if event.kind == pb::EventKind::LoggedIn as i32 {
                logins += 1;
                if logins == LOGINS {
                    break;
                }
            }
        }
        logins
    });

    // Every login with a token emits one event; far more than the agent buffers for one subscriber.
    const LOGINS: usize = 1200;
    let mut client = agent.grpc().await;
    let before = rss_kib(&agent);
    for _ in 0..LOGINS {
        let req = pb::LoginRequest {
            context: "dev".into(),
            method: LoginMethod::PachToken.into(),
            pach_token: token.clone(),
            force: true,
            ..Default::default()
        };
        let mut steps = client.login(req).await.unwrap().into_inner();
        while let Some(step) = steps.message().await.unwrap() {
            assert!(!matches!(step.event, Some(pb::login_event::Event::Failed(_))), "{step:?}");
        }
    }
    let after = rss_kib(&agent);
    let seen = tokio::time::timeout(Duration::from_secs(60), counted).await.expect("the reading watcher").unwrap();
    assert_eq!(seen, LOGINS, "a watcher that reads sees every event while another one is stuck");
    assert_whoami_answers(&agent, "a watcher stopped reading");
    assert!(
        after < before + RSS_MARGIN_KIB,
        "the agent grew from {before} KiB to {after} KiB while a watcher did not read {LOGINS} events"
    );

    let mut missed = None;
    let mut received = 0;
    while let Ok(Ok(Some(event))) = tokio::time::timeout(Duration::from_secs(5), stuck_events.message()).await {
        received += 1;
        if event.detail.starts_with("missed ") {
            missed = Some(event.detail);
            break;
        }
    }
    let missed =
        missed.unwrap_or_else(|| panic!("the stuck watcher was never told it missed events ({received} read)"));
    assert!(missed.contains("call GetStatus for the current state"), "{missed}");
    assert!(received < LOGINS, "the agent did not keep all {LOGINS} events for the stuck watcher: {received}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_largest_validity_a_request_can_ask_for_is_answered_without_harm() {
    let pachd = PachdDev::start(None, None);
    let (mut agent, forever) = logged_in_agent(&pachd).await;
    let mut client = agent.grpc().await;
    let asked = |context: &str| pb::GetTokenRequest {
        context: context.into(),
        min_valid_seconds: u64::MAX,
        fit_to_lifetime: false,
    };
    let got = client.get_token(asked("dev")).await.expect("a token that never expires is valid long enough");
    assert_eq!(got.into_inner().token, forever);

    agent.add_context("short", &pachd.address, &[]);
    let short = pachd.robot_token("short", 60).await;
    agent.cli_stdin(&["login", "--context", "short", "--token-stdin"], &short).ok();
    let err = client.get_token(asked("short")).await.expect_err("no minute-long token lasts forever");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("less than the"), "{}", err.message());
    let fitted = pb::GetTokenRequest { fit_to_lifetime: true, ..asked("short") };
    let got = client.get_token(fitted).await.expect("a fitted request gets what the session can give");
    assert!(got.into_inner().min_valid_seconds <= 30, "half the token's lifetime at most");
    assert_whoami_answers(&agent, "validities of u64::MAX seconds");
    assert!(!agent.log_text().contains("panicked"), "{}", agent.log_text());
    agent.stop();
}
