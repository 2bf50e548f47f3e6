//! The helper's side: `pachagent-net` reads one request on standard input, makes it with the real OpenID and pachd
//! clients, writes the answer on standard output and exits. A refresh has two answers: the refresh token to use
//! next as soon as the provider has answered, then the new ID token's checks.

use std::future::Future;
use std::io::{self, Write};
use std::path::Path;
use std::pin::Pin;

use prost::Message;
use tokio::sync::mpsc::UnboundedSender;
use zeroize::Zeroizing;

use super::wire;
use crate::config::PachdAddress;
use crate::oidc;
use crate::pachd::{self, OidcState, PachdClient};
use crate::proto::net_helper::{self as proto, reply::Outcome, request::Call};
use crate::secret::{AuthCode, IdToken, PachToken, RefreshToken};

/// Answers the one request on standard input.
///
/// # Errors
/// When standard input or output fail or the request is malformed: the agent then reports the helper as failed.
pub fn serve() -> io::Result<()> {
    let (mut input, output) = crate::frames::unbuffered_stdio()?;
    let input =
        crate::frames::read(&mut input)?.ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no request"))?;
    let mut request = proto::Request::decode(&input[..]).map_err(io::Error::other)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut replies = Replies(output);
    let outcome = runtime.block_on(answer(request.call.as_mut(), &mut replies));
    wire::wipe_request(&mut request);
    replies.send(outcome?)
}

/// Where a call's answers go: the helper's standard output, or the agent's own task ([`answer_in_this_process`]).
trait Answers {
    fn send(&mut self, outcome: Outcome) -> io::Result<()>;
}

/// The helper's standard output, one frame per answer.
struct Replies<W>(W);

impl<W: Write> Answers for Replies<W> {
    fn send(&mut self, outcome: Outcome) -> io::Result<()> {
        let mut reply = proto::Reply { outcome: Some(outcome) };
        let frame = Zeroizing::new(reply.encode_length_delimited_to_vec());
        wire::wipe_reply(&mut reply);
        self.0.write_all(&frame)?;
        self.0.flush()
    }
}

impl Answers for UnboundedSender<Outcome> {
    fn send(&mut self, outcome: Outcome) -> io::Result<()> {
        UnboundedSender::send(self, outcome).map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    }
}

/// Has this process make the agent's calls itself rather than start `pachagent-net` for each: for `pachagent dev`,
/// a development stack in one process, which `cargo run` builds without the helpers. The resident agent never
/// calls this, and so does not contain the code it brings in.
pub fn answer_in_this_process() {
    let _ = super::DIRECT.set(in_this_process);
}

fn in_this_process(mut call: Call, mut answers: UnboundedSender<Outcome>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let outcome = answer(Some(&mut call), &mut answers).await;
        wire::wipe_request(&mut proto::Request { call: Some(call) });
        if let Ok(outcome) = outcome {
            let _ = Answers::send(&mut answers, outcome);
        }
    })
}

/// The answer to `call` (a refresh sends its first answer itself, through `replies`).
async fn answer(call: Option<&mut Call>, replies: &mut impl Answers) -> io::Result<Outcome> {
    let Some(call) = call else {
        return Ok(Outcome::OidcFailure(wire::oidc_failure(oidc::Error::Unsupported(
            "the agent's helper got a request it does not know: install pachagent's programs from one build".into(),
        ))));
    };
    let outcome = match call {
        Call::Discover(settings) => {
            let provider = oidc::Provider::discover(wire::settings_from(settings.clone())).await;
            provider.and_then(|p| discovered(&p)).unwrap_or_else(oidc_failure)
        }
        Call::AuthorizationUrl(a) => provider(a.provider.take())
            .and_then(|p| p.authorization_request(&a.redirect_uri))
            .map(|request| {
                let (state, nonce, pkce_verifier) = request.secrets();
                Outcome::Authorization(proto::Authorization {
                    url: request.url.clone(),
                    redirect_uri: request.redirect_uri.clone(),
                    state: state.to_owned(),
                    nonce: nonce.to_owned(),
                    pkce_verifier: pkce_verifier.to_owned(),
                })
            })
            .unwrap_or_else(oidc_failure),
        Call::ExchangeCode(x) => {
            let result = async {
                let p = provider(x.provider.take())?;
                let a = x.authorization.take().unwrap_or_default();
                let request =
                    oidc::AuthorizationRequest::from_parts(a.url, a.redirect_uri, a.state, a.nonce, a.pkce_verifier);
                let tokens = p.exchange_code(request, AuthCode::new(std::mem::take(&mut x.code))).await?;
                verified(&p, &tokens)
            };
            result.await.unwrap_or_else(oidc_failure)
        }
        Call::StartDevice(p) => {
            let result = async {
                let device = provider(Some(std::mem::take(p)))?.start_device().await?;
                Ok(Outcome::Device(proto::Device {
                    user_code: device.user_code.clone(),
                    verification_uri: device.verification_uri.clone(),
                    verification_uri_complete: device.verification_uri_complete.clone(),
                    expires_at: Some(crate::proto::timestamp(device.expires_at)),
                    answer: device.answer_document()?,
                }))
            };
            result.await.unwrap_or_else(oidc_failure)
        }
        Call::FinishDevice(f) => {
            let result = async {
                let p = provider(f.provider.take())?;
                let d = f.device.take().unwrap_or_default();
                let expires_at = crate::proto::time(d.expires_at.as_ref()).unwrap_or_else(chrono::Utc::now);
                let device = oidc::DeviceAuthorization::from_answer(&d.answer, expires_at)?;
                let tokens = p.finish_device(&device, std::time::Duration::from_millis(f.timeout_ms)).await?;
                verified(&p, &tokens)
            };
            result.await.unwrap_or_else(oidc_failure)
        }
        Call::Refresh(r) => {
            let refreshed = async {
                let p = provider(r.provider.take())?;
                let refreshed = p.refresh(&RefreshToken::new(std::mem::take(&mut r.refresh_token))).await?;
                Ok::<_, oidc::Error>((p, refreshed))
            };
            match refreshed.await {
                Ok((p, refreshed)) => {
                    // The provider may have retired the old refresh token: the agent keeps the new one before the
                    // ID token is even looked at.
                    let refresh_token = refreshed.refresh_token.as_ref().map(|t| t.expose_secret().to_owned());
                    replies.send(Outcome::Refreshed(proto::Refreshed { refresh_token }))?;
                    p.verify_refreshed(refreshed)
                        .await
                        .and_then(|tokens| verified(&p, &tokens))
                        .unwrap_or_else(oidc_failure)
                }
                Err(e) => oidc_failure(e),
            }
        }
        Call::WhoAmI(p) => {
            pachd_answer(async {
                let token = PachToken::new(std::mem::take(&mut p.secret));
                Ok(Outcome::Identity(wire::identity_to(pachd_client(p)?.who_am_i(&token).await?)))
            })
            .await
        }
        Call::TradeIdToken(p) => {
            pachd_answer(async {
                let client = pachd_client(p)?;
                let token = client.authenticate_id_token(&IdToken::new(std::mem::take(&mut p.secret))).await?;
                traded(&client, token).await
            })
            .await
        }
        Call::GetOidcLogin(p) => {
            pachd_answer(async {
                let login = pachd_client(p)?.get_oidc_login().await?;
                Ok(Outcome::OidcLogin(proto::OidcLogin {
                    login_url: login.login_url,
                    state: login.state.expose_secret().to_owned(),
                }))
            })
            .await
        }
        Call::TradeOidcState(p) => {
            pachd_answer(async {
                let client = pachd_client(p)?;
                let token = client.authenticate_oidc_state(&OidcState::new(std::mem::take(&mut p.secret))).await?;
                traded(&client, token).await
            })
            .await
        }
        Call::Revoke(p) => {
            pachd_answer(async {
                let token = PachToken::new(std::mem::take(&mut p.secret));
                Ok(Outcome::Revoked(pachd_client(p)?.revoke(&token).await?))
            })
            .await
        }
    };
    Ok(outcome)
}

fn oidc_failure(e: oidc::Error) -> Outcome {
    Outcome::OidcFailure(wire::oidc_failure(e))
}

async fn pachd_answer(call: impl Future<Output = Result<Outcome, pachd::Error>>) -> Outcome {
    call.await.unwrap_or_else(|e| Outcome::PachdFailure(wire::pachd_failure(e)))
}

/// The provider the agent discovered earlier, from the documents it kept; no request is made.
fn provider(p: Option<proto::Provider>) -> Result<oidc::Provider, oidc::Error> {
    let p = p.unwrap_or_default();
    let settings = wire::settings_from(p.settings.unwrap_or_default());
    oidc::Provider::from_documents(settings, &p.discovery, &p.keys)
}

fn discovered(p: &oidc::Provider) -> Result<Outcome, oidc::Error> {
    Ok(Outcome::Discovered(proto::Discovered {
        discovery: p.discovery_document()?,
        keys: p.keys_document()?,
        device_flow: p.supports_device_flow(),
    }))
}

/// Verified tokens, with the key set they were checked with (fetched again when the provider rotated its keys).
fn verified(p: &oidc::Provider, tokens: &oidc::Tokens) -> Result<Outcome, oidc::Error> {
    Ok(Outcome::Verified(proto::Verified { tokens: Some(wire::tokens_to(tokens)), keys: p.keys_document()? }))
}

fn pachd_client(p: &proto::Pachd) -> Result<PachdClient, pachd::Error> {
    let address = PachdAddress::parse(&p.address)
        .map_err(|reason| pachd::Error::Unreachable { address: p.address.clone(), reason })?;
    PachdClient::new(&address, p.ca_file.as_deref().map(Path::new))
}

async fn traded(client: &PachdClient, token: PachToken) -> Result<Outcome, pachd::Error> {
    let identity = client.who_am_i(&token).await?;
    Ok(Outcome::Traded(proto::Traded {
        pach_token: token.expose_secret().to_owned(),
        identity: Some(wire::identity_to(identity)),
    }))
}
