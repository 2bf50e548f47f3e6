use super::jwt::b64url_decode;
use super::*;

const ISSUER: &str = "http://127.0.0.1:5556/dex";

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn claims(json: Value) -> Claims {
    Claims::parse(json.to_string().as_bytes()).unwrap()
}

fn check(json: Value, now: u64) -> Result<(), String> {
    claims(json).check(ISSUER, "pachd", at(now)).map_err(|e| e.to_string())
}

#[test]
fn a_token_for_pachd_from_the_issuer_within_its_lifetime_passes() {
    let ok = serde_json::json!({"iss": ISSUER, "aud": ["pachd", "agent"], "exp": 2_000, "nbf": 1_030});
    assert_eq!(check(ok, 1_000), Ok(()));
}

#[test]
fn the_issuer_must_match_exactly_even_a_trailing_slash() {
    let err = check(serde_json::json!({"iss": format!("{ISSUER}/"), "aud": "pachd", "exp": 2_000}), 1_000);
    assert_eq!(
        err,
        Err(format!(r#"oidc: id token issued by a different provider, expected "{ISSUER}" got "{ISSUER}/""#))
    );
}

#[test]
fn the_audience_error_lists_the_audiences_like_go() {
    let err = check(serde_json::json!({"iss": ISSUER, "aud": ["agent", "other"], "exp": 2_000}), 1_000);
    assert_eq!(err, Err(r#"oidc: expected audience "pachd" got ["agent" "other"]"#.to_owned()));
    let err = check(serde_json::json!({"iss": ISSUER, "exp": 2_000}), 1_000);
    assert_eq!(err, Err(r#"oidc: expected audience "pachd" got []"#.to_owned()));
}

#[test]
fn an_expired_or_exp_less_token_is_refused_with_its_expiry() {
    let err = check(serde_json::json!({"iss": ISSUER, "aud": "pachd", "exp": 1_736_424_000}), 1_736_424_001);
    assert_eq!(err, Err("oidc: token is expired (Token Expiry: 2025-01-09 12:00:00 +0000 UTC)".to_owned()));
    let err = check(serde_json::json!({"iss": ISSUER, "aud": "pachd"}), 1_000);
    assert_eq!(err, Err("oidc: token is expired (Token Expiry: 0001-01-01 00:00:00 +0000 UTC)".to_owned()));
    // exp == now is still valid: go-oidc checks `exp.Before(now)`.
    assert_eq!(check(serde_json::json!({"iss": ISSUER, "aud": "pachd", "exp": 1_000}), 1_000), Ok(()));
}

#[test]
fn not_before_allows_one_minute_of_skew() {
    let token = |nbf: u64| serde_json::json!({"iss": ISSUER, "aud": "pachd", "exp": 5_000, "nbf": nbf});
    assert_eq!(check(token(1_060), 1_000), Ok(()));
    let err = check(token(1_061), 1_000).unwrap_err();
    assert!(err.starts_with("oidc: current time 1970-01-01 00:16:40 +0000 UTC before the nbf"), "{err}");
}

#[test]
fn claims_of_the_wrong_json_type_are_reported_like_go_json() {
    let err = Claims::parse(br#"{"iss": 5}"#).unwrap_err().to_string();
    assert_eq!(
        err,
        "oidc: failed to unmarshal claims: json: cannot unmarshal number into Go struct field idToken.iss of type string"
    );
    let err = Claims::parse(b"[1]").unwrap_err().to_string();
    assert!(err.ends_with("cannot unmarshal array into Go value of type oidc.idToken"), "{err}");
}

#[test]
fn a_token_that_is_not_a_jwt_is_malformed() {
    assert_eq!(
        jwt_payload("garbage").unwrap_err().to_string(),
        "oidc: malformed jwt: oidc: malformed jwt, expected 3 parts got 1"
    );
    assert!(jwt_payload("a.b=.c").unwrap_err().to_string().contains("illegal base64 data at input byte 1"));
}

#[test]
fn base64url_decoding_follows_go_raw_url_encoding() {
    assert_eq!(b64url_decode("eyJhIjoxfQ").unwrap(), br#"{"a":1}"#);
    assert_eq!(b64url_decode("_-8").unwrap(), vec![0xff, 0xef]);
    assert!(b64url_decode("eyJhIjoxfQ==").is_err(), "padding is not allowed");
    assert!(b64url_decode("a").is_err());
}

/// Base64url without padding, the inverse of `b64url_decode`, for building test headers.
fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[test]
fn the_algorithm_must_be_advertised_and_defaults_to_rs256() {
    let token =
        |alg: &str| format!("{}.e30.c2ln", b64(serde_json::json!({"alg": alg, "kid": "k"}).to_string().as_bytes()));
    let raw = token("HS256");
    let jwt = SignedJwt::parse(&raw).unwrap();
    assert_eq!(jwt.kid.as_deref(), Some("k"));
    assert_eq!(
        jwt.algorithm(&[]).unwrap_err().to_string(),
        r#"oidc: id token signed with unsupported algorithm, expected ["RS256"] got "HS256""#
    );
    let raw = token("ES256");
    assert_eq!(SignedJwt::parse(&raw).unwrap().algorithm(&["ES256".to_owned()]).unwrap(), Algorithm::ES256);
    assert_eq!(b64url_decode(&b64(b"any bytes at all")).unwrap(), b"any bytes at all");
}
