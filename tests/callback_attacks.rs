//! The login's loopback listener under attack while a real login waits on it, and identity providers that
//! answer the code exchange with something unusable.
//!
//! The listener cases run a real login (`pachagent login --no-browser`) against the real OpenID Provider and
//! pachd-dev, throw one kind of bad request at the listener, and then let the scripted user finish the login:
//! it must still work. The provider cases need a provider that misbehaves on purpose, which the real one will
//! not do; [`BrokenProvider`] is a few lines of std HTTP that publishes discovery and keys and then answers the
//! token request badly. Every such login must fail with exit code 4 and say what came back, and from where.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use support::op::{self, TestOp};
use support::{Keyring, PachdDev, RunningCli, TestAgent, fake_user, fake_user_logging, query_param};

const EMAIL: &str = "alice@example.com";

/// A real provider, pachd-dev trusting it, and an agent with a context `dev` that logs in with it.
fn oidc_stack(op: &TestOp) -> (PachdDev, TestAgent) {
    let pachd = PachdDev::start_with_args(Some(op.issuer()), None, None, &["--client-id", op::PUBLIC_CLIENT]);
    let mut agent = TestAgent::new(Keyring::Keyutils);
    agent.add_context("dev", &pachd.address, &["--issuer", op.issuer(), "--client-id", op::PUBLIC_CLIENT]);
    agent.start();
    (pachd, agent)
}

/// A browser login waiting for its callback.
struct Pending {
    cli: RunningCli,
    url: String,
    state: String,
    port: u16,
}

impl Pending {
    fn start(agent: &TestAgent, args: &[&str]) -> Self {
        let mut cli = agent.spawn_cli(args);
        let url = cli.login_url();
        let state = query_param(&url, "state").expect("a state in the login URL");
        let redirect = query_param(&url, "redirect_uri").expect("a redirect_uri in the login URL");
        let port = url::Url::parse(&redirect).unwrap().port().expect("a port in the redirect URI");
        Self { cli, url, state, port }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The scripted user logs in at the provider; the CLI must then report `email` logged in.
    #[track_caller]
    fn completes_as(self, email: &str) {
        assert_eq!(fake_user(&self.url, email, "approve"), 0, "the scripted user could not finish the login");
        let out = self.cli.finish(60);
        assert_eq!(out.code, 0, "the real login failed: {out:#?}");
        assert_eq!(out.stdout.lines().next(), Some(format!("You are \"user:{email}\"").as_str()), "{out:#?}");
        assert!(TcpStream::connect(("127.0.0.1", self.port)).is_err(), "the listener closed after the login");
    }
}

fn get(target: &str, host: &str, extra_headers: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra_headers}Connection: close\r\n\r\n")
}

/// Sends `request` to the listener and returns the status of its answer; `None` when the connection was cut
/// without one.
fn send(port: u16, request: &[u8]) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
    // A listener that refuses early may close before all of it is written.
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).split_whitespace().nth(1).and_then(|c| c.parse().ok())
}

/// How many authorization codes the provider was asked to exchange and refused.
fn refused_code_exchanges(op: &TestOp) -> u64 {
    op.stats()["errors"]["authorization_code"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_callback_replayed_after_its_login_finished_reaches_no_one_and_the_next_login_refuses_it() {
    let op = TestOp::start();
    let (_pachd, agent) = oidc_stack(&op);
    let first = Pending::start(&agent, &["login", "--no-browser"]);
    let steps = agent.dir.path().join("fake_user.log");
    assert_eq!(fake_user_logging(&first.url, EMAIL, "approve", Some(&steps)), 0);
    assert_eq!(first.cli.finish(60).ok().stdout.lines().next(), Some("You are \"user:alice@example.com\""));
    let log = std::fs::read_to_string(&steps).unwrap();
    let delivered = log
        .lines()
        .find_map(|l| l.split_once("delivering to the client: ").map(|(_, u)| u.trim().to_owned()))
        .unwrap_or_else(|| panic!("the scripted user's log names no callback:\n{log}"));
    let delivered = url::Url::parse(&delivered).unwrap();
    assert!(delivered.query().is_some_and(|q| q.contains("code=")), "{delivered}");
    let replayed = format!("{}?{}", delivered.path(), delivered.query().unwrap());

    assert!(
        TcpStream::connect(("127.0.0.1", first.port)).is_err(),
        "the finished login's listener is closed, so replaying its callback there reaches no one"
    );
    let second = Pending::start(&agent, &["login", "--force", "--no-browser"]);
    assert_ne!(second.state, first.state, "every login has its own state");
    let host = second.host();
    assert_eq!(send(second.port, get(&replayed, &host, "").as_bytes()), Some(400), "the old code and state");
    second.completes_as("bob@example.com");
    assert_eq!(op.grants("authorization_code"), 2, "one exchange per login");
    assert_eq!(refused_code_exchanges(&op), 0, "the replayed code was never sent to the provider again");
    assert_eq!(agent.cli(&["whoami"]).ok().stdout.lines().next(), Some("You are \"user:bob@example.com\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_overlong_callback_request_is_refused_and_the_login_goes_on() {
    let op = TestOp::start();
    let (_pachd, agent) = oidc_stack(&op);
    let login = Pending::start(&agent, &["login", "--no-browser"]);
    let host = login.host();
    let long_target = format!("/callback?state={}&code={}", login.state, "c".repeat(64 * 1024));
    let long_header = format!("Cookie: session={}\r\n", "k".repeat(64 * 1024));
    let fine_target = format!("/callback?state={}&code=from-an-overlong-request", login.state);
    let cases = [
        ("a 64 KiB request target", get(&long_target, &host, "")),
        ("a 64 KiB header", get(&fine_target, &host, &long_header)),
    ];
    for (what, request) in cases {
        let status = send(login.port, request.as_bytes());
        assert!(matches!(status, Some(400 | 414 | 431)), "{what}: refused as too large, got {status:?}");
    }
    assert!(agent.stored("dev").await.is_none(), "nothing was stored");
    login.completes_as(EMAIL);
    assert_eq!(refused_code_exchanges(&op), 0, "no code from an overlong request reached the provider");
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_a_web_page_makes_are_refused_even_with_the_right_state() {
    let op = TestOp::start();
    let (_pachd, agent) = oidc_stack(&op);
    let login = Pending::start(&agent, &["login", "--no-browser"]);
    let host = login.host();
    // The state is right: only where the request comes from gives it away.
    let target = format!("/callback?code=from-a-web-page&state={}", login.state);
    let cases = [
        (
            "fetch() from another origin",
            "Origin: http://evil.example\r\nSec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: cors\r\nSec-Fetch-Dest: empty\r\n",
        ),
        (
            "an <img> on another site",
            "Sec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: no-cors\r\nSec-Fetch-Dest: image\r\n",
        ),
        (
            "a frame on another site",
            "Sec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: navigate\r\nSec-Fetch-Dest: iframe\r\n",
        ),
        ("an XMLHttpRequest from a browser without Fetch Metadata", "Origin: http://evil.example\r\n"),
    ];
    for (what, headers) in cases {
        assert_eq!(send(login.port, get(&target, &host, headers).as_bytes()), Some(400), "{what}");
    }
    assert!(agent.stored("dev").await.is_none(), "nothing was stored");
    login.completes_as(EMAIL);
    assert_eq!(refused_code_exchanges(&op), 0, "no code a web page sent reached the provider");
}

#[test]
fn slow_loris_connections_neither_delay_the_real_callback_nor_stay_open() {
    const CONNECTIONS: usize = 20;
    const MAX_SECONDS: usize = 90;
    let op = TestOp::start();
    let (_pachd, agent) = oidc_stack(&op);
    let login = Pending::start(&agent, &["login", "--no-browser"]);
    let request = get(
        &format!("/callback?code=slow&state={}", login.state),
        &login.host(),
        &format!("X-Padding: {}\r\n", "p".repeat(200)),
    )
    .into_bytes();
    assert!(request.len() > MAX_SECONDS, "the request takes longer to trickle than the test waits");
    let (port, request_len) = (login.port, request.len());
    let (started, trickling) = mpsc::channel();
    // One byte a second on every connection, until the listener has cut them all.
    let dripper = std::thread::spawn(move || {
        let mut open: Vec<(TcpStream, usize)> = (0..CONNECTIONS)
            .map(|_| {
                let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_nonblocking(true).unwrap();
                (s, 0)
            })
            .collect();
        let mut most_sent = 0;
        for second in 0..MAX_SECONDS {
            open.retain_mut(|(stream, sent)| {
                let mut buf = [0u8; 512];
                match stream.read(&mut buf) {
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    // An answer (such as 408), the end of the stream or a reset: the listener cut it.
                    _ => return false,
                }
                if stream.write_all(&request[*sent..=*sent]).is_err() {
                    return false;
                }
                *sent += 1;
                most_sent = most_sent.max(*sent);
                true
            });
            if second == 3 {
                let _ = started.send(());
            }
            if open.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        (open.len(), most_sent)
    });
    trickling.recv_timeout(Duration::from_secs(30)).expect("the slow connections are trickling");
    login.completes_as(EMAIL);
    let (still_open, most_sent) = dripper.join().unwrap();
    assert_eq!(still_open, 0, "{still_open} slow connections were still open after {MAX_SECONDS} s");
    assert!(most_sent < request_len, "a trickled request was read to its end");
}

/// Sets the agent's soft open-file limit with util-linux's prlimit (the hard one stays, so it can be raised again).
fn limit_open_files(pid: u32, limit: usize) {
    let status = std::process::Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={limit}:"))
        .status()
        .expect("prlimit (util-linux)");
    assert!(status.success(), "prlimit failed");
}

#[test]
fn a_flood_of_connections_that_exhausts_the_agents_file_descriptors_does_not_end_the_login() {
    let op = TestOp::start();
    let (_pachd, agent) = oidc_stack(&op);
    let login = Pending::start(&agent, &["login", "--no-browser"]);
    let pid = agent.agent_pid().unwrap();
    let open_now = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    // Room for a few more files only.
    limit_open_files(pid, open_now + 8);
    // More than the descriptors left and than the listener's cap, and fewer than the kernel queues for a
    // listener (somaxconn, 128 on older kernels), so that every connect completes at once.
    let flood: Vec<TcpStream> = (0..100).map(|_| TcpStream::connect(("127.0.0.1", login.port)).unwrap()).collect();
    // The agent runs out of descriptors and says it will retry.
    agent.wait_for_log("accepting a connection on the login callback failed; retrying", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    drop(flood);
    limit_open_files(pid, 1024);
    login.completes_as(EMAIL);
}

#[test]
fn the_callback_listener_cannot_be_reached_on_any_address_but_127_0_0_1() {
    let op = TestOp::start();
    let (_pachd, agent) = oidc_stack(&op);
    let login = Pending::start(&agent, &["login", "--no-browser"]);
    let mut others = vec![IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), IpAddr::V6(Ipv6Addr::LOCALHOST)];
    // The address this machine would use towards a documentation network (RFC 5737): its own LAN address, when
    // it has one. No packet is sent.
    let lan = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").and_then(|()| s.local_addr()))
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified());
    others.extend(lan);
    for ip in others {
        let reached = TcpStream::connect_timeout(&SocketAddr::new(ip, login.port), Duration::from_secs(5));
        assert!(reached.is_err(), "the login's listener answered on {ip}");
    }
    assert!(TcpStream::connect(("127.0.0.1", login.port)).is_ok(), "it does listen on 127.0.0.1");
    login.completes_as(EMAIL);
}

/// How [`BrokenProvider`] answers the token request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenAnswer {
    /// 200 with a proxy's sign-in page.
    HtmlPage,
    /// 502 with a proxy's HTML error page.
    BadGateway,
    /// 302 back to the token endpoint itself.
    RedirectLoop,
    /// 200 JSON that never ends (2 MiB, no Content-Length).
    Oversized,
    /// 400 `invalid_grant`, as for a code used twice.
    InvalidGrant,
    /// Reads the request and never answers.
    Silence,
}

/// A provider whose discovery document and keys are fine, and whose token endpoint answers as told.
struct BrokenProvider {
    issuer: String,
    answer: Arc<Mutex<TokenAnswer>>,
}

impl BrokenProvider {
    fn start(answer: TokenAnswer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let answer = Arc::new(Mutex::new(answer));
        let (base, shared) = (issuer.clone(), Arc::clone(&answer));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (base, answer) = (base.clone(), *shared.lock().unwrap());
                std::thread::spawn(move || serve(stream, &base, answer));
            }
        });
        Self { issuer, answer }
    }

    fn set(&self, answer: TokenAnswer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn token_url(&self) -> String {
        format!("{}/token", self.issuer)
    }
}

fn serve(mut stream: TcpStream, base: &str, answer: TokenAnswer) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let length = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    let _ = stream.read_exact(&mut body);
    let path = head.split_whitespace().nth(1).unwrap_or_default().to_owned();
    let respond = |stream: &mut TcpStream, status: &str, headers: &str, body: &str| {
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    };
    match path.as_str() {
        "/.well-known/openid-configuration" => {
            let discovery = support::issuer::discovery_document(base, base);
            respond(&mut stream, "200 OK", "Content-Type: application/json\r\n", &discovery.to_string());
        }
        "/jwks" => {
            use base64::Engine as _;
            let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xc3u8; 256]);
            let jwks = serde_json::json!({"keys": [{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": "k1", "n": n, "e": "AQAB"}]});
            respond(&mut stream, "200 OK", "Content-Type: application/json\r\n", &jwks.to_string());
        }
        "/token" => match answer {
            TokenAnswer::HtmlPage => respond(
                &mut stream,
                "200 OK",
                "Content-Type: text/html\r\n",
                "<!doctype html><html><body><form>Sign in to the corporate proxy</form></body></html>",
            ),
            TokenAnswer::BadGateway => {
                respond(&mut stream, "502 Bad Gateway", "Content-Type: text/html\r\n", "<h1>502 Bad Gateway</h1>")
            }
            TokenAnswer::RedirectLoop => respond(&mut stream, "302 Found", "Location: /token\r\n", ""),
            TokenAnswer::InvalidGrant => respond(
                &mut stream,
                "400 Bad Request",
                "Content-Type: application/json\r\n",
                r#"{"error":"invalid_grant","error_description":"authorization code has already been used"}"#,
            ),
            TokenAnswer::Oversized => {
                let _ =
                    stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n");
                let _ = stream.write_all(b"{\"access_token\":\"");
                let chunk = [b'a'; 64 * 1024];
                for _ in 0..32 {
                    if stream.write_all(&chunk).is_err() {
                        return;
                    }
                }
                let _ = stream.write_all(b"\",\"token_type\":\"Bearer\"}");
            }
            TokenAnswer::Silence => std::thread::sleep(Duration::from_secs(120)),
        },
        _ => respond(&mut stream, "404 Not Found", "", ""),
    }
}

/// An agent whose context `dev` logs in with `provider`.
fn agent_for(provider: &BrokenProvider, pachd: &PachdDev) -> TestAgent {
    let mut agent = TestAgent::new(Keyring::Keyutils);
    agent.add_context("dev", &pachd.address, &["--issuer", &provider.issuer, "--client-id", op::PUBLIC_CLIENT]);
    agent.start();
    agent
}

/// Runs a browser login up to the code exchange (delivering a code as the provider's redirect would) and
/// returns what the browser's page said and what the CLI printed.
fn login_with_a_code(agent: &TestAgent) -> (Option<u16>, support::CliOutput) {
    let login = Pending::start(agent, &["login", "--no-browser"]);
    let callback = format!("/callback?code=a-code-from-the-provider&state={}", login.state);
    // The browser's page is answered once the login has an outcome.
    let page = send(login.port, get(&callback, &login.host(), "").as_bytes());
    let out = login.cli.finish(90);
    assert!(TcpStream::connect(("127.0.0.1", login.port)).is_err(), "the listener closed after the failed login");
    (page, out)
}

#[test]
fn a_token_endpoint_answering_garbage_fails_the_login_with_exit_4_and_says_what_came_back() {
    let pachd = PachdDev::start(None, None);
    let provider = BrokenProvider::start(TokenAnswer::HtmlPage);
    let agent = agent_for(&provider, &pachd);
    let token_url = provider.token_url();
    let cases: [(TokenAnswer, &[&str]); 5] = [
        (TokenAnswer::HtmlPage, &["HTTP 200 OK with an HTML page instead of JSON", "proxy"]),
        (TokenAnswer::BadGateway, &["is unreachable", "HTTP 502 Bad Gateway from the provider"]),
        (TokenAnswer::RedirectLoop, &["HTTP 302 Found redirect to \"/token\"", "redirects are not followed"]),
        (TokenAnswer::Oversized, &["the answer is over 1048576 bytes"]),
        (TokenAnswer::InvalidGrant, &["refused: invalid_grant: authorization code has already been used"]),
    ];
    for (answer, wanted) in cases {
        provider.set(answer);
        let (page, out) = login_with_a_code(&agent);
        assert_eq!(out.code, 4, "{answer:?}: {out:#?}");
        for w in wanted {
            assert!(out.stderr.contains(w), "{answer:?}: no {w:?} in {out:#?}");
        }
        if answer != TokenAnswer::InvalidGrant {
            assert!(out.stderr.contains(&token_url), "{answer:?}: the message names {token_url}: {out:#?}");
        }
        assert_eq!(page, Some(401), "{answer:?}: the browser's page says the login failed");
        assert_eq!(agent.cli(&["status", "--json"]).json()["sessions"][0]["state"], "logged_out", "{answer:?}");
    }
}

#[test]
fn a_token_endpoint_that_never_answers_times_out_with_exit_4_naming_its_url() {
    let pachd = PachdDev::start(None, None);
    let provider = BrokenProvider::start(TokenAnswer::Silence);
    let agent = agent_for(&provider, &pachd);
    let (page, out) = login_with_a_code(&agent);
    assert_eq!(out.code, 4, "{out:#?}");
    assert!(out.stderr.contains(&format!("{} is unreachable", provider.token_url())), "{out:#?}");
    assert!(out.stderr.contains("(timed out)"), "{out:#?}");
    assert_eq!(page, Some(401), "the browser's page says the login failed");
}
