//! Any text as a pachd address: parsing never panics, an accepted address prints in pachctl's canonical form,
//! and that form parses back to the same address.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pachagent::config::PachdAddress;

fuzz_target!(|text: &str| {
    match PachdAddress::parse(text) {
        Ok(address) => {
            let canonical = address.to_string();
            assert!(canonical.starts_with("grpc://") || canonical.starts_with("grpcs://"), "{canonical}");
            assert_eq!(PachdAddress::parse(&canonical).as_ref(), Ok(&address), "{canonical}");
        }
        Err(why) => assert!(why.contains("pachd address"), "a refusal names what it refuses: {why}"),
    }
});
