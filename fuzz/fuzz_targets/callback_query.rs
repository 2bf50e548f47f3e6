//! Any query string at the login callback: reading it never panics, and it yields a code (or the provider's
//! error) exactly when it carries this login's state once and the code (or error) once, with no parameter of the
//! callback repeated — the same judgement an independent reading of the query makes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pachagent::oidc::callback::{Callback, parse_query};

const STATE: &str = "expected-state-Zm9vYmFy";

fuzz_target!(|query: &str| {
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let values = |name: &str| pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect::<Vec<_>>();
    let (states, codes, errors, descriptions) =
        (values("state"), values("code"), values("error"), values("error_description"));
    let no_repeats = states.len() <= 1 && codes.len() <= 1 && errors.len() <= 1 && descriptions.len() <= 1;
    let ours = no_repeats && states == [STATE];
    match parse_query(query, STATE.as_bytes()) {
        Ok(Callback::Code(code)) => {
            assert!(ours && errors.is_empty(), "a code was taken from {query:?}");
            assert_eq!(codes, [code.expose_secret()], "the code is the one in the query");
        }
        Ok(Callback::Refused { error, description }) => {
            assert!(ours, "a refusal was taken from {query:?}");
            assert_eq!(errors, [error.as_str()]);
            assert_eq!(descriptions.first().copied(), description.as_deref());
        }
        Err(why) => {
            let wanted = ours && (!errors.is_empty() || codes.first().is_some_and(|c| !c.is_empty()));
            assert!(!wanted, "{query:?} was refused ({why}) though it is this login's callback");
        }
    }
});
