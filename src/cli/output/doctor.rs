//! The printer of `pachagent doctor`: one line per check.

use std::io::{self, Write};

use serde::Serialize;

use super::format::json_line;

/// How one `doctor` check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckOutcome {
    /// All good.
    Pass,
    /// Works, with a caveat worth knowing; does not change the exit code.
    Warn,
    /// Broken: the detail says what to fix.
    Fail,
}

/// One `doctor` check.
#[derive(Debug, Clone)]
pub struct Check {
    /// A short name (`config`, `pachd`, `issuer`…).
    pub name: String,
    /// How it came out.
    pub outcome: CheckOutcome,
    /// What was found, or what to fix.
    pub detail: String,
}

#[derive(Serialize)]
struct DoctorJson<'a> {
    ok: bool,
    checks: Vec<CheckJson<'a>>,
}

#[derive(Serialize)]
struct CheckJson<'a> {
    name: &'a str,
    status: &'static str,
    detail: &'a str,
}

/// `doctor`: `✔ <name>: <detail>` (`✘` when failed, `!` for a caveat), or
/// `{"ok","checks":[{"name","status":"pass|warn|fail","detail"}]}`.
pub fn doctor(out: &mut dyn Write, checks: &[Check], json: bool) -> io::Result<()> {
    if json {
        let ok = checks.iter().all(|c| c.outcome != CheckOutcome::Fail);
        let checks = checks
            .iter()
            .map(|c| CheckJson {
                name: &c.name,
                status: match c.outcome {
                    CheckOutcome::Pass => "pass",
                    CheckOutcome::Warn => "warn",
                    CheckOutcome::Fail => "fail",
                },
                detail: &c.detail,
            })
            .collect();
        return json_line(out, &DoctorJson { ok, checks });
    }
    for check in checks {
        let mark = match check.outcome {
            CheckOutcome::Pass => '✔',
            CheckOutcome::Warn => '!',
            CheckOutcome::Fail => '✘',
        };
        writeln!(out, "{mark} {}: {}", check.name, check.detail)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checks() -> Vec<Check> {
        vec![
            Check { name: "config".into(), outcome: CheckOutcome::Pass, detail: "c.toml parses".into() },
            Check { name: "keyring".into(), outcome: CheckOutcome::Warn, detail: "until reboot".into() },
            Check { name: "pachd".into(), outcome: CheckOutcome::Fail, detail: "unreachable".into() },
        ]
    }

    #[test]
    fn each_check_is_one_line_marked_pass_caveat_or_fail() {
        let mut out = Vec::new();
        doctor(&mut out, &checks(), false).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "✔ config: c.toml parses\n! keyring: until reboot\n✘ pachd: unreachable\n"
        );
    }

    #[test]
    fn json_is_one_object_that_is_not_ok_when_a_check_failed() {
        let mut out = Vec::new();
        doctor(&mut out, &checks(), true).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["checks"][1]["status"], "warn");
        assert_eq!(v["checks"][2], serde_json::json!({"name": "pachd", "status": "fail", "detail": "unreachable"}));
        let mut out = Vec::new();
        doctor(&mut out, &checks()[..2], true).unwrap();
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&out).unwrap()["ok"], true, "a caveat is not a failure");
    }
}
