//! The printers of `context` commands, which show the configuration file rather than an agent's answer.

use std::io::{self, Write};

use serde::Serialize;

use super::format::{Row, json_line, marker, table};
use crate::config::Config;

#[derive(Serialize)]
struct ContextsJson<'a> {
    config_path: String,
    active_context: Option<&'a str>,
    contexts: Vec<ContextJson<'a>>,
}

#[derive(Serialize)]
struct ContextJson<'a> {
    name: &'a str,
    active: bool,
    pachd_address: String,
    method: &'static str,
    issuer: Option<&'a str>,
    client_id: Option<&'a str>,
    scopes: &'a [String],
    redirect_port: Option<u16>,
    ca_file: Option<String>,
}

/// `context list` (and `context add|use|remove --json`, which print the result): a table with the active
/// context marked `*`, or `{"config_path","active_context","contexts":[…]}`.
pub fn contexts(out: &mut dyn Write, err: &mut dyn Write, config: &Config, json: bool) -> io::Result<()> {
    let active = config.active_context.as_deref();
    if json {
        let contexts = config
            .contexts
            .values()
            .map(|c| ContextJson {
                name: &c.name,
                active: active == Some(c.name.as_str()),
                pachd_address: c.pachd.to_string(),
                method: c.method.as_str(),
                issuer: c.issuer.as_deref(),
                client_id: c.client_id.as_deref(),
                scopes: &c.scopes,
                redirect_port: c.redirect_port,
                ca_file: c.ca_file.as_ref().map(|p| p.display().to_string()),
            })
            .collect();
        let value = ContextsJson { config_path: config.path.display().to_string(), active_context: active, contexts };
        return json_line(out, &value);
    }
    if config.contexts.is_empty() {
        return writeln!(
            err,
            "No contexts in {}. Add one with: pachagent context add NAME --pachd ADDRESS",
            config.path.display()
        );
    }
    let rows = config
        .contexts
        .values()
        .map(|c| Row {
            cells: vec![
                marker(active == Some(c.name.as_str())),
                c.name.clone(),
                c.pachd.to_string(),
                c.method.as_str().to_owned(),
                c.issuer.clone().unwrap_or_else(|| "-".to_owned()),
            ],
            notes: Vec::new(),
        })
        .collect::<Vec<_>>();
    table(out, &["", "NAME", "PACHD", "METHOD", "ISSUER"], &rows)
}

/// What a `context` edit did, in one sentence on `out`.
pub fn context_changed(out: &mut dyn Write, message: &str) -> io::Result<()> {
    writeln!(out, "{message}")
}
