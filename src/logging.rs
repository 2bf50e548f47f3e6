//! Log filtering shared by the agent, its helpers and pachd-dev.
//!
//! `RUST_LOG` takes a comma-separated list of `target=level` directives and bare levels (`pachagent=debug,info`),
//! read with `tracing-subscriber`'s [`Targets`]: the common subset of the `env_logger` syntax, without span and
//! field filters, whose matcher would cost every process (each `pachagent` command included) a regex engine.

use tracing::Level;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer as _, fmt, registry};

/// Crates that never log above `info`, whatever `RUST_LOG` asks: at their most verbose levels they can print
/// request headers, where `authn-token` travels, and no token may reach a log.
const HELD_AT_INFO: [&str; 6] = ["h2", "hyper", "hyper_util", "tower", "tonic", "reqwest"];

/// The filter for this process: `RUST_LOG` when it is set and reads, else `default` (same syntax).
pub fn log_filter(default: &str) -> Targets {
    filter_from(std::env::var("RUST_LOG").ok().as_deref(), default)
}

/// Logging for the agent's helpers (`pachagent-keyring`, `pachagent-net`): their warnings (a keyring that had to
/// be reconnected, a provider that rotated its keys) join the agent's log as plain lines, on the stderr they share.
pub fn init_helper() {
    let layer = fmt::layer().with_writer(std::io::stderr).with_ansi(false);
    registry().with(layer.with_filter(log_filter("warn"))).init();
}

/// [`log_filter`] for a given `RUST_LOG` value.
fn filter_from(rust_log: Option<&str>, default: &str) -> Targets {
    let asked = rust_log
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .and_then(|s| s.parse::<Targets>().ok())
        .or_else(|| default.parse().ok())
        .unwrap_or_default();
    let mut filter: Targets = asked.iter().filter(|(target, _)| !is_held(target)).collect();
    if let Some(level) = asked.default_level() {
        filter = filter.with_default(level);
    }
    for target in HELD_AT_INFO {
        // As verbose as asked, but never past info.
        let level = [Level::INFO, Level::WARN, Level::ERROR]
            .into_iter()
            .find(|level| asked.would_enable(target, level))
            .map_or(LevelFilter::OFF, LevelFilter::from_level);
        filter = filter.with_target(target, level);
    }
    filter
}

/// Whether `target` is one of [`HELD_AT_INFO`] or a module of one.
fn is_held(target: &str) -> bool {
    HELD_AT_INFO
        .iter()
        .any(|held| target.strip_prefix(held).is_some_and(|rest| rest.is_empty() || rest.starts_with("::")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enables(filter: &Targets, target: &str, level: Level) -> bool {
        filter.would_enable(target, &level)
    }

    #[test]
    fn without_rust_log_the_default_applies() {
        let filter = filter_from(None, "info");
        assert!(enables(&filter, "pachagent::engine", Level::INFO));
        assert!(!enables(&filter, "pachagent::engine", Level::DEBUG));
        let filter = filter_from(Some("  "), "warn");
        assert!(!enables(&filter, "pachagent", Level::INFO));
        assert!(enables(&filter, "pachagent", Level::WARN));
    }

    #[test]
    fn rust_log_directives_choose_levels_per_target() {
        let filter = filter_from(Some("pachagent=debug,warn"), "info");
        assert!(enables(&filter, "pachagent::daemon", Level::DEBUG));
        assert!(!enables(&filter, "pachagent::daemon", Level::TRACE));
        assert!(!enables(&filter, "zbus", Level::INFO));
        assert!(enables(&filter, "zbus", Level::WARN));
    }

    #[test]
    fn http_crates_never_log_past_info_even_when_asked() {
        for rust_log in ["trace", "h2=trace,hyper=debug", "h2::codec=trace,tonic::transport=trace,info"] {
            let filter = filter_from(Some(rust_log), "info");
            for target in ["h2", "h2::codec", "hyper", "hyper_util::client", "tower", "tonic::transport", "reqwest"] {
                assert!(!enables(&filter, target, Level::DEBUG), "{rust_log}: {target} at debug");
            }
            assert!(enables(&filter, "h2::codec", Level::INFO), "{rust_log}: h2 still says what matters");
        }
        // Only a cap: asking for less is honoured.
        let filter = filter_from(Some("warn"), "info");
        assert!(!enables(&filter, "hyper", Level::INFO));
        assert!(enables(&filter, "hyper", Level::WARN));
        // A crate named like a held one is not held.
        let filter = filter_from(Some("hyperion=trace"), "info");
        assert!(enables(&filter, "hyperion", Level::TRACE));
    }

    #[test]
    fn an_unreadable_rust_log_falls_back_to_the_default() {
        let filter = filter_from(Some("pachagent=loud"), "info");
        assert!(enables(&filter, "pachagent", Level::INFO));
        assert!(!enables(&filter, "pachagent", Level::DEBUG));
    }
}
