//! Log filtering shared by the agent and pachd-dev.

use tracing_subscriber::EnvFilter;

/// `RUST_LOG` (or `default`), with the HTTP/2 and HTTP crates held at `info` whatever it asks: at their most
/// verbose levels they can print request headers, where `authn-token` travels, and no token may reach a log.
pub fn env_filter(default: &str) -> EnvFilter {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    for directive in ["h2=info", "hyper=info", "hyper_util=info", "tower=info", "tonic=info", "reqwest=info"] {
        if let Ok(directive) = directive.parse() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}
