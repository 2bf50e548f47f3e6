//! The printers of `context` commands, which show the configuration file rather than an agent's answer.

use std::io::{self, Write};

use serde::Serialize;

use super::format::{Row, json_line, marker, table};
use crate::config::{Config, Context, RedirectHost};

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
    issuer_url: Option<&'a str>,
    issuer_ca_file: Option<String>,
    client_id: Option<&'a str>,
    scopes: &'a [String],
    redirect_ports: &'a [u16],
    redirect_host: &'static str,
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
                issuer_url: c.issuer_url.as_deref(),
                issuer_ca_file: c.issuer_ca_file.as_ref().map(|p| p.display().to_string()),
                client_id: c.client_id.as_deref(),
                scopes: &c.scopes,
                redirect_ports: &c.redirect_ports,
                redirect_host: c.redirect_host.as_str(),
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
            paints: Vec::new(),
            notes: notes(c),
        })
        .collect::<Vec<_>>();
    table(out, &["", "NAME", "PACHD", "METHOD", "ISSUER"], &rows)
}

/// The lines under a context's row: the login settings that differ from the defaults.
fn notes(c: &Context) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(url) = &c.issuer_url {
        notes.push(format!("discovery: {url}"));
    }
    if !c.redirect_ports.is_empty() || c.redirect_host != RedirectHost::default() {
        let ports = if c.redirect_ports.is_empty() {
            "a random port".to_owned()
        } else {
            c.redirect_ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
        };
        notes.push(format!("redirect: {} on {ports}", c.redirect_host.as_str()));
    }
    notes
}

/// What a `context` edit did, in one sentence on `out`.
pub fn context_changed(out: &mut dyn Write, message: &str) -> io::Result<()> {
    writeln!(out, "{message}")
}
