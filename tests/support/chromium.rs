//! Real headless Chromium driven over WebDriver (`chromedriver` + `fantoccini`), for login tests that must go
//! through an actual browser.
//!
//! ```ignore
//! mod support; // or: #[path = "support/chromium.rs"] mod chromium;
//! let browser = support::chromium::Chromium::start().await;
//! let page_text = browser.login_with_email(&authorization_url, "alice@example.com").await;
//! browser.close().await;
//! ```
//! Needs Debian's `chromium` and `chromium-driver` (`/usr/bin/chromium`, `/usr/bin/chromedriver`); a missing one
//! fails the test with the install command (scripts/test.sh installs both). Every browser gets a fresh profile in
//! a temporary directory. Pages are awaited by polling the URL and elements, never by fixed sleeps.

// Each test crate uses a different subset of this helper.
#![allow(dead_code)]
// Test support: a failure to set up the browser should stop the test loudly.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

/// The Chromium binary the WebDriver session runs.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// The WebDriver server.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long any single wait (a page, an element, a redirect) may take before the test fails.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

const LOGIN_INPUT: &str = "input[name=login], input[name=email]";
const PASSWORD_INPUT: &str = "input[name=password], input[type=password]";
const SUBMIT: &str = "button[type=submit], input[type=submit], form button:not([type])";
const LOGIN_FORM_SUBMIT: &str =
    "ancestor::form[1]//*[(self::button and (@type='submit' or not(@type))) or (self::input and @type='submit')]";

fn check_prerequisites() {
    for binary in [CHROMIUM, CHROMEDRIVER] {
        if !Path::new(binary).is_file() {
            panic!(
                "{binary} is missing: the browser-login tests need Debian's chromium and chromedriver. Run \
                 scripts/test.sh (it installs them), or: sudo apt-get install -y chromium chromium-driver"
            );
        }
    }
}

/// A headless Chromium with its own chromedriver and a fresh profile. Dropping it kills both (use
/// [`Chromium::close`] to end the session politely first).
pub struct Chromium {
    client: Client,
    driver: Driver,
    log: Arc<Mutex<String>>,
    timeout: Duration,
    _profile: tempfile::TempDir,
}

impl Chromium {
    /// Starts chromedriver on a free port and opens a headless Chromium session (about 2 s).
    pub async fn start() -> Self {
        check_prerequisites();
        let profile = tempfile::tempdir().expect("temporary Chromium profile directory");
        let (driver, port, log) = start_chromedriver();

        let args: Vec<String> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .chain(std::iter::once(format!("--user-data-dir={}", profile.path().display())))
        .collect();
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), "chrome".into());
        caps.insert("goog:chromeOptions".into(), serde_json::json!({ "binary": CHROMIUM, "args": args }));
        // Plain HTTP to the local chromedriver. (ClientBuilder::rustls() panics here: rustls finds no process-wide
        // CryptoProvider, and tests cannot install one without a direct rustls dependency.) hyper-util's
        // client-legacy feature, which names this connector, is switched on by fantoccini.
        let mut builder = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(caps);
        let webdriver = format!("http://127.0.0.1:{port}");
        let client = match builder.connect(&webdriver).await {
            Ok(client) => client,
            Err(e) => {
                drop(driver);
                let log = log.lock().unwrap_or_else(|e| e.into_inner()).clone();
                panic!("cannot open a Chromium session through chromedriver: {e}\nchromedriver said:\n{log}");
            }
        };
        Self { client, driver, log, timeout: DEFAULT_TIMEOUT, _profile: profile }
    }

    /// Every later wait fails after `timeout` instead of [`DEFAULT_TIMEOUT`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The WebDriver client, for anything this helper does not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Navigates to `url` (waits for the page load).
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("Chromium could not open {url}: {e}"));
    }

    /// The URL the browser shows now.
    pub async fn current_url(&self) -> url::Url {
        self.client.current_url().await.expect("current URL")
    }

    /// The visible text of the current page.
    pub async fn page_text(&self) -> String {
        match self.client.find(Locator::Css("body")).await {
            Ok(body) => body.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Logs in as a person would: opens `url` (an authorization URL), waits for the login form
    /// (`input[name=login]` or `input[name=email]`), types `email` (and a password when the form has a password
    /// field), submits, then presses the consent page's button when there is one, and waits until the browser
    /// has left the identity provider for a loopback address (the client's redirect URI). Returns the text of
    /// that final page (what the client answered on its callback).
    pub async fn login_with_email(&self, url: &str, email: &str) -> String {
        self.goto(url).await;
        let login_input = self.wait_for_element(LOGIN_INPUT, "a login form (input named login or email)").await;
        let idp_origin = self.current_url().await.origin();
        login_input.send_keys(email).await.expect("type the email");
        if let Ok(password) = self.client.find(Locator::Css(PASSWORD_INPUT)).await {
            password.send_keys("password").await.expect("type a password");
        }
        // The login form's own submit button, else the page's first one.
        match login_input.find(Locator::XPath(LOGIN_FORM_SUBMIT)).await {
            Ok(button) => button.click().await.unwrap_or_else(|e| panic!("clicking the login form's button: {e}")),
            Err(_) => self.click_submit("the login form's submit button").await,
        }

        // Next: either a consent page on the provider, or (a provider without consent) the client's callback.
        let deadline = Instant::now() + self.timeout;
        loop {
            let now = self.current_url().await;
            if left_for_loopback(&now, &idp_origin) {
                return self.final_page_text().await;
            }
            // The login page is gone (its input with it) and the next page has a button to press.
            if self.client.find(Locator::Css(LOGIN_INPUT)).await.is_err()
                && self.client.find(Locator::Css(SUBMIT)).await.is_ok()
            {
                break;
            }
            self.check_deadline(deadline, "the consent page after logging in").await;
            tokio::time::sleep(POLL).await;
        }
        self.click_submit("the consent page's button").await;

        let deadline = Instant::now() + self.timeout;
        loop {
            let now = self.current_url().await;
            if left_for_loopback(&now, &idp_origin) {
                return self.final_page_text().await;
            }
            self.check_deadline(deadline, "the redirect to the client's loopback callback after consenting").await;
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the browser's URL satisfies `done`, then returns it.
    pub async fn wait_for_url(&self, what: &str, done: impl Fn(&url::Url) -> bool) -> url::Url {
        let deadline = Instant::now() + self.timeout;
        loop {
            let now = self.current_url().await;
            if done(&now) {
                return now;
            }
            self.check_deadline(deadline, what).await;
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until an element matching the CSS `selector` is on the page.
    pub async fn wait_for_element(&self, selector: &str, what: &str) -> fantoccini::elements::Element {
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Ok(element) = self.client.find(Locator::Css(selector)).await {
                return element;
            }
            self.check_deadline(deadline, what).await;
            tokio::time::sleep(POLL).await;
        }
    }

    /// Ends the WebDriver session (Chromium quits), then stops chromedriver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
        // Drop then stops chromedriver.
    }

    /// What chromedriver printed (its log), for failure messages.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn click_submit(&self, what: &str) {
        let button = self.wait_for_element(SUBMIT, what).await;
        button.click().await.unwrap_or_else(|e| panic!("clicking {what}: {e}"));
    }

    async fn final_page_text(&self) -> String {
        // The callback page may still be loading when the URL changes.
        let deadline = Instant::now() + self.timeout;
        loop {
            let ready = self.client.execute("return document.readyState", vec![]).await;
            if matches!(ready, Ok(serde_json::Value::String(ref s)) if s == "complete") {
                return self.page_text().await;
            }
            self.check_deadline(deadline, "the callback page to finish loading").await;
            tokio::time::sleep(POLL).await;
        }
    }

    async fn check_deadline(&self, deadline: Instant, what: &str) {
        if Instant::now() < deadline {
            return;
        }
        let url = self.client.current_url().await.map(|u| u.to_string()).unwrap_or_else(|e| format!("<{e}>"));
        let text = self.page_text().await;
        panic!("Chromium: waited {:?} for {what}; the browser is at {url}, showing:\n{text}", self.timeout);
    }
}

/// The chromedriver process; dropping it stops chromedriver, Chromium and its helpers, which all run in
/// chromedriver's own process group.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        // chromedriver leads its group (spawned with `process_group(0)`), so its pid names the group. This calls
        // killpg(2) itself: procps-ng 4's kill(1) reads `kill -KILL -1234` as `kill(-1, SIGKILL)`, which for root
        // is every process on the machine (it took the whole test run down whenever the pid began with 1).
        if let Ok(group) = i32::try_from(self.0.id())
            && group > 1
        {
            #[allow(unsafe_code)]
            // SAFETY: killpg(2) takes no pointers; the group is our own child's, not yet reaped.
            unsafe {
                libc::killpg(group, libc::SIGKILL);
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether `url` is on a loopback host and no longer on the identity provider's origin.
fn left_for_loopback(url: &url::Url, idp_origin: &url::Origin) -> bool {
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    loopback && url.origin() != *idp_origin
}

/// Starts chromedriver on a port it picks itself (`--port=0`) and reads the port from its startup line.
fn start_chromedriver() -> (Driver, u16, Arc<Mutex<String>>) {
    let mut driver = Command::new(CHROMEDRIVER)
        .arg("--port=0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map(Driver)
        .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"));
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel::<u16>();
    let stdout = driver.0.stdout.take().expect("piped stdout");
    let stderr = driver.0.stderr.take().expect("piped stderr");
    for (stream, tx) in [(Box::new(stdout) as Box<dyn std::io::Read + Send>, Some(tx)), (Box::new(stderr), None)] {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                // "ChromeDriver was started successfully on port 40211."
                if let Some(tx) = &tx
                    && let Some((_, rest)) = line.split_once("started successfully on port ")
                    && let Ok(port) = rest.trim_end_matches('.').trim().parse()
                {
                    let _ = tx.send(port);
                }
                let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
    }
    match rx.recv_timeout(DEFAULT_TIMEOUT) {
        Ok(port) => (driver, port, log),
        Err(_) => {
            drop(driver);
            panic!("chromedriver did not report its port; it said:\n{}", log.lock().unwrap_or_else(|e| e.into_inner()));
        }
    }
}
