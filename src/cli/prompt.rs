//! `context add` on a terminal: asks for what the flags left out, checking each answer before the next question,
//! so that a typo is caught while the user is still there rather than at the first login.
//!
//! Scripts give everything as flags and are never asked anything; without a terminal a missing value is an error
//! that names its flag. Questions go to stderr, so that `--json` on stdout stays clean.

use std::io::{self, IsTerminal};
use std::time::Duration;

use super::{ContextAddArgs, Error, output};
use crate::config::PachdAddress;
use crate::oidc::{Provider, ProviderSettings};

/// How long the issuer's discovery document may take; a person is waiting for the next question.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(10);

const PACHD_QUESTION: &str = "pachd address (e.g. grpcs://pachd.example.com:443)";
const ISSUER_QUESTION: &str = "OIDC issuer URL (empty: none, log in through pachd as pachctl does)";
const CLIENT_ID_QUESTION: &str = "OAuth client id registered for pachagent at that issuer";

/// Whether someone can be asked: stdin is typed at and stderr is read on a terminal.
pub(super) fn can_ask() -> bool {
    io::stdin().is_terminal() && io::stderr().is_terminal()
}

/// Asks for the pachd address, then for the issuer and client id unless flags gave them, and puts the answers
/// in `args`. Each answer is checked at once (the address's form; the issuer's discovery document, which must be
/// reachable and name exactly that issuer) and asked again when it is refused.
///
/// # Errors
/// [`Error::NoAnswer`] when the input ends (Ctrl-D), [`Error::Output`] when stderr cannot be written.
pub(super) async fn complete(args: &mut ContextAddArgs) -> Result<(), Error> {
    let name = args.name.clone();
    let pachd = ask(PACHD_QUESTION, &name, "--pachd ADDRESS", |answer| async move {
        PachdAddress::parse(&answer).map(|_| Some(answer))
    })
    .await?;
    args.pachd = pachd;
    if args.issuer.is_none() {
        let issuer_url = args.issuer_url.clone();
        let ca_file = args.issuer_ca_file.clone();
        args.issuer = ask(ISSUER_QUESTION, &name, "--issuer URL", |answer| {
            let (issuer_url, ca_file) = (issuer_url.clone(), ca_file.clone());
            async move {
                if answer.is_empty() {
                    return Ok(None);
                }
                check_issuer(answer, issuer_url, ca_file).await.map(Some)
            }
        })
        .await?;
    }
    if args.issuer.is_some() && args.client_id.is_none() {
        args.client_id = ask(CLIENT_ID_QUESTION, &name, "--client-id ID", |answer| async move {
            if answer.is_empty() {
                Err("an issuer needs the client id pachagent is registered with there".to_owned())
            } else {
                Ok(Some(answer))
            }
        })
        .await?;
    }
    Ok(())
}

/// Asks `question` until `check` takes the (trimmed) answer; `Ok(None)` is an accepted empty answer.
async fn ask<F, Fut>(question: &'static str, context: &str, flag: &str, check: F) -> Result<Option<String>, Error>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<Option<String>, String>>,
{
    loop {
        output::question(&mut io::stderr(), question)?;
        let mut line = String::new();
        if io::stdin().read_line(&mut line).map_err(Error::Stdin)? == 0 {
            output::input_ended(&mut io::stderr())?;
            return Err(Error::NoAnswer { question, command: format!("pachagent context add {context} {flag}") });
        }
        match check(line.trim().to_owned()).await {
            Ok(value) => return Ok(value),
            Err(why) => output::answer_refused(&mut io::stderr(), &why)?,
        }
    }
}

/// Fetches the issuer's discovery document and keys, as the first login will: the issuer must be reachable and
/// name itself exactly as typed.
async fn check_issuer(
    issuer: String,
    issuer_url: Option<String>,
    ca_file: Option<std::path::PathBuf>,
) -> Result<String, String> {
    let parsed = url::Url::parse(&issuer)
        .map_err(|e| format!("{issuer:?} is not a URL ({e}): use e.g. https://login.example.com/"))?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err(format!("{issuer:?} is not an http(s) URL: use e.g. https://login.example.com/"));
    }
    let settings = ProviderSettings {
        issuer: issuer.clone(),
        issuer_url,
        // Discovery does not use it; the login does, and the next question asks for it.
        client_id: String::new(),
        client_secret: None,
        ca_file,
        scopes: Vec::new(),
    };
    match tokio::time::timeout(DISCOVERY_TIMEOUT, Provider::discover(settings)).await {
        Ok(Ok(_)) => Ok(issuer),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("the issuer {issuer} did not answer within {}s", DISCOVERY_TIMEOUT.as_secs())),
    }
}
