use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

use super::service::{AuthError, AuthService, TOKEN_KEY};
use super::*;
use crate::devstack::tokens::TokenInfo;
use crate::proto::auth::AuthenticateRequest;

fn service(root: Option<&str>) -> AuthService {
    let opts = PachdDevOptions { root_token: root.map(|r| PachToken::new(r.to_owned())), ..Default::default() };
    PachdDev::new(opts, oidc_addr()).unwrap().service
}

fn oidc_addr() -> SocketAddr {
    "127.0.0.1:1657".parse().unwrap()
}

fn with_token(tokens: &[&str]) -> MetadataMap {
    let mut md = MetadataMap::new();
    for t in tokens {
        md.append(TOKEN_KEY, t.parse().unwrap());
    }
    md
}

fn status_of(err: AuthError) -> (Code, String) {
    let status = Status::from(err);
    (status.code(), status.message().to_owned())
}

#[test]
fn an_inactive_server_answers_not_activated_before_looking_at_tokens() {
    let svc = service(None);
    let err = svc.caller_of(&with_token(&["a", "b"]), SystemTime::now()).unwrap_err();
    assert_eq!(status_of(err), (Code::Unimplemented, "the auth service is not activated".into()));
}

#[test]
fn the_caller_checks_follow_pachd_order_and_codes() {
    let svc = service(Some("root"));
    let now = SystemTime::now();
    let cases = [
        (vec![], Code::Unauthenticated, "no authentication token (try logging in)"),
        (vec!["x", "y"], Code::Unknown, "multiple authentication token keys found in context"),
        (vec!["nope"], Code::Unauthenticated, "provided auth token is corrupted or has expired (try logging in again)"),
    ];
    for (tokens, code, message) in cases {
        let err = svc.caller_of(&with_token(&tokens), now).unwrap_err();
        assert_eq!(status_of(err), (code, message.to_owned()), "{tokens:?}");
    }
    let root = svc.caller_of(&with_token(&["root"]), now).unwrap();
    assert_eq!(root, TokenInfo::forever("pach:root".into()));
}

#[test]
fn activation_happens_once_and_generates_a_root_token_when_none_is_given() {
    let svc = service(None);
    let root = svc.activate_auth(String::new()).unwrap();
    assert_eq!(root.expose_secret().len(), 32);
    let err = svc.activate_auth("other".into()).unwrap_err();
    assert_eq!(status_of(err), (Code::Unimplemented, "the auth service is already activated".into()));
    assert_eq!(svc.caller_of(&with_token(&[root.expose_secret()]), SystemTime::now()).unwrap().subject, "pach:root");
}

#[test]
fn robot_tokens_strip_the_prefix_refuse_colons_and_expire_after_their_ttl() {
    let svc = service(Some("root"));
    let now = SystemTime::now();
    let root = with_token(&["root"]);
    let token = svc.issue_robot_token(&root, "robot:ci", 0, now).unwrap();
    let info = svc.caller_of(&with_token(&[token.expose_secret()]), now).unwrap();
    assert_eq!(info, TokenInfo::forever("robot:ci".into()));

    let err = svc.issue_robot_token(&root, "robot:a:b", 0, now).unwrap_err();
    assert_eq!(status_of(err), (Code::Unknown, "robot names cannot contain colons (':')".into()));

    let short = svc.issue_robot_token(&root, "ci", 1, now).unwrap();
    let later = now + Duration::from_secs(2);
    let err = svc.caller_of(&with_token(&[short.expose_secret()]), later).unwrap_err();
    assert_eq!(status_of(err), (Code::Internal, "token expiration is in the past".into()));
}

#[test]
fn only_root_may_mint_robot_tokens_and_others_get_pachd_text() {
    let svc = service(Some("root"));
    let now = SystemTime::now();
    let robot = svc.issue_robot_token(&with_token(&["root"]), "ci", 0, now).unwrap();
    let err = svc.issue_robot_token(&with_token(&[robot.expose_secret()]), "other", 0, now).unwrap_err();
    assert_eq!(
        status_of(err),
        (
            Code::PermissionDenied,
            "robot:ci is not authorized to perform this operation - needs permissions [CLUSTER_AUTH_GET_ROBOT_TOKEN] \
             on CLUSTER . Run `pachctl auth roles-for-permission` to find roles that grant a given permission."
                .into()
        )
    );
}

#[test]
fn revoking_reports_rows_deleted_and_needs_a_signed_in_caller() {
    let svc = service(Some("root"));
    let now = SystemTime::now();
    let robot = svc.issue_robot_token(&with_token(&["root"]), "ci", 0, now).unwrap();
    assert_eq!(svc.revoke(&with_token(&["root"]), robot.expose_secret(), now).unwrap(), 1);
    assert_eq!(svc.revoke(&with_token(&["root"]), robot.expose_secret(), now).unwrap(), 0);
    let err = svc.revoke(&with_token(&[]), "root", now).unwrap_err();
    assert_eq!(status_of(err).0, Code::Unauthenticated);
}

#[tokio::test]
async fn authenticate_without_a_credential_or_issuer_answers_like_pachd() {
    let svc = service(Some("root"));
    let now = SystemTime::now();
    let none = AuthenticateRequest::default();
    let err = svc.exchange(&none, now).await.unwrap_err();
    assert_eq!(status_of(err), (Code::Unknown, "unrecognized authentication mechanism (old pachd?)".into()));
    let id = AuthenticateRequest { id_token: "x.y.z".into(), oidc_state: String::new() };
    let err = svc.exchange(&id, now).await.unwrap_err();
    assert_eq!(status_of(err), (Code::Unknown, "OIDC ID provider configuration not found".into()));
    // Like pachd's etcd watch, an unknown state is waited on until the caller gives up.
    let state = AuthenticateRequest { oidc_state: "s".into(), id_token: String::new() };
    let waited = tokio::time::timeout(Duration::from_millis(100), svc.exchange(&state, now)).await;
    assert!(waited.is_err(), "an unknown state blocks");
}

#[tokio::test]
async fn get_oidc_login_without_an_issuer_answers_like_pachd() {
    let svc = service(None);
    let err = svc.oidc_login().await.unwrap_err();
    assert_eq!(status_of(err), (Code::Unknown, "OIDC ID provider configuration not found".into()));
}

#[test]
fn the_ready_line_is_one_json_object_with_the_grpc_address() {
    let addr: SocketAddr = "127.0.0.1:41234".parse().unwrap();
    let callback = callback_url("127.0.0.1:41235".parse().unwrap());
    assert_eq!(
        ready_line(addr, false, None, &callback),
        r#"{"pachd":"grpc://127.0.0.1:41234","oidc_callback":"http://127.0.0.1:41235/authorization-code/callback"}"#
    );
    let line: serde_json::Value =
        serde_json::from_str(&ready_line(addr, false, Some("http://127.0.0.1:1"), &callback)).unwrap();
    assert_eq!(line["issuer"], "http://127.0.0.1:1");
    assert_eq!(line["oidc_callback"], callback);
}

#[test]
fn a_root_token_file_is_trimmed_and_must_not_be_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("root");
    std::fs::write(&path, "  t0ken\n").unwrap();
    assert_eq!(read_root_token_file(&path).unwrap().expose_secret(), "t0ken");
    std::fs::write(&path, "\n").unwrap();
    assert!(matches!(read_root_token_file(&path), Err(Error::EmptyRootToken { .. })));
}

#[test]
fn a_client_secret_file_is_trimmed_and_must_not_be_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    std::fs::write(&path, "s3cret\n").unwrap();
    assert_eq!(read_client_secret_file(&path).unwrap().expose_secret(), "s3cret");
    std::fs::write(&path, " ").unwrap();
    assert!(matches!(read_client_secret_file(&path), Err(Error::EmptyClientSecret { .. })));
}

#[test]
fn the_default_redirect_uri_is_pachd_devs_own_callback() {
    let dev = PachdDev::new(PachdDevOptions::default(), oidc_addr()).unwrap();
    assert_eq!(dev.redirect_uri(), "http://127.0.0.1:1657/authorization-code/callback");
    let opts = PachdDevOptions { redirect_uri: Some("http://localhost:30657/x".into()), ..Default::default() };
    assert_eq!(PachdDev::new(opts, oidc_addr()).unwrap().redirect_uri(), "http://localhost:30657/x");
}

#[tokio::test]
async fn the_oidc_port_answers_200_ok_everywhere_but_the_callback_like_pachds_mux() {
    use hyper::Method;

    use crate::devstack::http::HttpRequest;

    let dev = PachdDev::new(PachdDevOptions::default(), oidc_addr()).unwrap();
    for (method, target) in [(Method::GET, "/"), (Method::POST, "/healthz"), (Method::GET, "/authorization-code")] {
        let r = dev.callback.handle(HttpRequest::new(method, target, &[], "")).await;
        assert_eq!((r.status.as_u16(), &r.body[..]), (200, &b"200 OK"[..]), "{target}");
    }
    let missing = dev.callback.handle(HttpRequest::new(Method::GET, "/authorization-code/callback?state=s", &[], ""));
    let missing = missing.await;
    assert_eq!(missing.status.as_u16(), 400);
    assert_eq!(&missing.body[..], b"invalid OIDC callback request: missing OIDC state token or authorization code\n");
    assert_eq!(missing.header(&hyper::header::X_CONTENT_TYPE_OPTIONS), Some("nosniff"));
}
