//! Any text as pachagent's config file: the parser never panics, and whatever it accepts resolves to contexts
//! whose addresses are in canonical form and parse back to themselves.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pachagent::config::{Config, PachdAddress};

fuzz_target!(|text: &str| {
    let path = Path::new("/fuzz/config.toml");
    match Config::from_toml(path, text) {
        Ok(config) => {
            for ctx in config.contexts.values() {
                let again = PachdAddress::parse(&ctx.pachd.to_string()).expect("a resolved address parses again");
                assert_eq!(again, ctx.pachd);
            }
            if let Some(active) = &config.active_context {
                assert!(config.contexts.contains_key(active), "the active context exists");
            }
        }
        Err(e) => assert!(!e.to_string().is_empty(), "every refusal says why"),
    }
});
