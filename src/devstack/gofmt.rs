//! The few pieces of Go's standard library output that pachd's answers show: `fmt` in error messages, and
//! `net/url` encoding in the login URLs GetOIDCLogin returns.
//!
//! pachd builds its messages with `%q` (quoted strings and string slices) and `%v` on a `time.Time`, and
//! clients match on those texts, so pachd-dev reproduces them here instead of using Rust's `Debug`, which
//! quotes and escapes differently. Its login URLs come from `url.Values.Encode`, whose escaping differs from
//! the `url` crate's in a few characters. Pure functions only; nothing here knows about gRPC or OIDC.

use std::fmt::Write as _;

/// Quotes a string the way Go's `%q` (`strconv.Quote`) does: double quotes, C-like escapes for control
/// characters, printable Unicode kept as is.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0b}' => out.push_str("\\v"),
            c if (c as u32) < 0x80 && c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                if (c as u32) <= 0xffff {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                } else {
                    let _ = write!(out, "\\U{:08x}", c as u32);
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Formats a string slice the way Go's `%q` prints a `[]string`: `["a" "b"]`, and `[]` when empty.
pub(crate) fn quote_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

/// Formats an instant the way Go's `time.Time.String()` (`%v`) does for a UTC time:
/// `2006-01-02 15:04:05.999999999 +0000 UTC`, with trailing zeros of the fraction dropped.
///
/// pachd runs with the container's local zone, which is UTC, so UTC is what its messages show.
pub(crate) fn time_string(secs: i64, nanos: u32) -> String {
    let Some(t) = chrono::DateTime::<chrono::Utc>::from_timestamp(secs, nanos) else {
        // Out of chrono's range: nothing a real token carries. Show the raw value rather than fail.
        return format!("{secs}.{nanos:09} +0000 UTC");
    };
    let mut out = t.format("%Y-%m-%d %H:%M:%S").to_string();
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push_str(" +0000 UTC");
    out
}

/// Go's `url.QueryEscape`: everything but ASCII letters, digits and `-_.~` is percent-encoded, space as `+`.
pub(crate) fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for byte in s.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(char::from(byte)),
            b' ' => out.push('+'),
            _ => {
                let _ = write!(out, "%{byte:02X}");
            }
        }
    }
    out
}

/// Go's `url.Values.Encode`: `key=value` pairs sorted by key, each side [`query_escape`]d, joined by `&`.
pub(crate) fn encode_values(pairs: &[(&str, &str)]) -> String {
    let mut sorted = pairs.to_vec();
    // A stable sort keeps the order of values under the same key, as Go does.
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let encoded: Vec<String> = sorted.iter().map(|(k, v)| format!("{}={}", query_escape(k), query_escape(v))).collect();
    encoded.join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded_like_go_url_values() {
        assert_eq!(query_escape("a b/c:d~e*"), "a+b%2Fc%3Ad~e%2A");
        let encoded = encode_values(&[("state", "s"), ("client_id", "pachd"), ("scope", "email openid")]);
        assert_eq!(encoded, "client_id=pachd&scope=email+openid&state=s");
    }

    #[test]
    fn strings_are_quoted_like_go_percent_q() {
        assert_eq!(quote("http://127.0.0.1:1/"), r#""http://127.0.0.1:1/""#);
        assert_eq!(quote("a\"b\\c\nd\u{1}"), r#""a\"b\\c\nd\x01""#);
        assert_eq!(quote("ünïcode"), "\"ünïcode\"");
    }

    #[test]
    fn string_lists_are_printed_like_a_go_slice() {
        assert_eq!(quote_list(&["a".into(), "b".into()]), r#"["a" "b"]"#);
        assert_eq!(quote_list(&[]), "[]");
    }

    #[test]
    fn times_are_printed_like_go_time_string_in_utc() {
        assert_eq!(time_string(1_736_424_000, 0), "2025-01-09 12:00:00 +0000 UTC");
        assert_eq!(time_string(1_736_424_000, 500_000_000), "2025-01-09 12:00:00.5 +0000 UTC");
        // Go's zero time, which go-oidc reports for a token without `exp`.
        assert_eq!(time_string(-62_135_596_800, 0), "0001-01-01 00:00:00 +0000 UTC");
    }
}
