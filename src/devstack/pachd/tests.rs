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
    PachdDev::new(opts).unwrap().service
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
    let state = AuthenticateRequest { oidc_state: "s".into(), id_token: String::new() };
    assert_eq!(status_of(svc.exchange(&state, now).await.unwrap_err()).0, Code::Unimplemented);
}

#[test]
fn the_ready_line_is_one_json_object_with_the_grpc_address() {
    let addr: SocketAddr = "127.0.0.1:41234".parse().unwrap();
    assert_eq!(ready_line(addr, None), r#"{"pachd":"grpc://127.0.0.1:41234"}"#);
    let line: serde_json::Value = serde_json::from_str(&ready_line(addr, Some("http://127.0.0.1:1"))).unwrap();
    assert_eq!(line["issuer"], "http://127.0.0.1:1");
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
