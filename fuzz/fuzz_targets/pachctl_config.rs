//! Any bytes as pachctl's config file, run through the edit `sync_pachctl` makes. The edit never panics and is a
//! fixed point (syncing the same session again changes nothing; so does logging out twice). When pachctl could
//! read the file before, it can read it after: every context is still there, in its order, and the synced one
//! has joined them; logging out afterwards leaves the contexts as they were.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pachagent::pachctl::{parse_contexts, updated_config};
use pachagent::secret::PachToken;

const ADDRESS: &str = "grpc://localhost:30650";

fuzz_target!(|data: &[u8]| {
    let path = Path::new("/fuzz/config.json");
    let token = PachToken::new("fuzz-session-token".to_owned());
    let before = parse_contexts(path, data);
    let Ok(Some(written)) = updated_config(path, Some(data), "fuzz", ADDRESS, Some(&token)) else { return };
    assert!(updated_config(path, Some(&written), "fuzz", ADDRESS, Some(&token)).expect("syncs again").is_none());
    let removed = updated_config(path, Some(&written), "fuzz", ADDRESS, None).expect("logs out");
    if let Some(removed) = &removed {
        assert!(updated_config(path, Some(removed), "fuzz", ADDRESS, None).expect("logs out again").is_none());
    }
    let Ok(before) = before else { return };
    let after = parse_contexts(path, &written).expect("a file pachctl could read stays readable");
    let kept = after.contexts.iter().filter(|(name, _)| before.contexts.iter().any(|(n, _)| n == name));
    assert!(kept.map(|(n, _)| n).eq(before.contexts.iter().map(|(n, _)| n)), "contexts kept, in order");
    assert!(after.contexts.iter().any(|(name, _)| name == "fuzz"), "the synced context is there");
    if let Some(removed) = removed {
        assert_eq!(parse_contexts(path, &removed).expect("reads back").contexts, after.contexts);
    }
});
