//! Formatting primitives shared by the printers: times, durations, Go quoting, JSON lines and text tables.

use std::io::{self, Write};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

pub use crate::proto::time as timestamp;

/// RFC 3339 in UTC with whole seconds, e.g. `2025-02-09T14:41:00Z`: the one time format of the JSON output.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub(super) fn rfc3339_opt(ts: Option<&prost_types::Timestamp>) -> Option<String> {
    timestamp(ts).map(rfc3339)
}

/// Go's `time.RFC822` layout (`02 Jan 06 15:04 MST`) for a UTC time, as pachctl prints session expirations.
pub fn rfc822_utc(t: DateTime<Utc>) -> String {
    t.format("%d %b %y %H:%M UTC").to_string()
}

/// A duration for people, to the minute: `2d 3h`, `7h 12m`, `12m`, `45s`; `expired` when not positive.
pub fn humanize(d: chrono::TimeDelta) -> String {
    let secs = d.num_seconds();
    if secs <= 0 {
        return "expired".to_owned();
    }
    let (days, hours, mins) = (secs / 86_400, secs % 86_400 / 3_600, secs % 3_600 / 60);
    match (days, hours, mins) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// Quotes a string the way Go's `%q` verb (`strconv.Quote`) does: `"`, `\` and non-printable characters are
/// escaped, printable Unicode is kept as is.
///
/// Go decides "printable" with Unicode tables; without them this treats as non-printable the control
/// characters, every space except U+0020, and the format and private-use characters a username could carry,
/// which covers what pachd's subjects can contain.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if c < ' ' || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c if is_go_printable(c) => out.push(c),
            c if u32::from(c) < 0x1_0000 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push_str(&format!("\\U{:08x}", u32::from(c))),
        }
    }
    out.push('"');
    out
}

fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    let format_or_private = matches!(u32::from(c),
        0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x180e | 0x200b..=0x200f | 0x202a..=0x202e
        | 0x2060..=0x2064 | 0x2066..=0x206f | 0xe000..=0xf8ff | 0xfeff | 0xfff9..=0xfffb
        | 0xf_0000..=0x10_ffff);
    !(c.is_control() || c.is_whitespace() || format_or_private)
}

/// Writes a JSON value on one line.
pub(super) fn json_line(out: &mut dyn Write, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    writeln!(out)
}

pub(super) fn non_empty(s: &str) -> Option<&str> {
    if s.is_empty() { None } else { Some(s) }
}

pub(super) fn marker(active: bool) -> String {
    if active { "*".to_owned() } else { String::new() }
}

pub(super) fn dash(s: &str) -> String {
    if s.is_empty() { "-".to_owned() } else { s.to_owned() }
}

/// Whether text for people may carry colours: only when it goes to a terminal, and never when `NO_COLOR` is set
/// to anything but the empty string (the no-color.org convention). Pipes, files and `--json` stay plain.
pub fn use_colour(to_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    to_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// A colour for a cell or line; the 8 basic ANSI colours, which every terminal theme maps to readable ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Paint {
    Green,
    Yellow,
    Red,
    Cyan,
    Dim,
}

impl Paint {
    fn sgr(self) -> &'static str {
        match self {
            Paint::Green => "32",
            Paint::Yellow => "33",
            Paint::Red => "31",
            Paint::Cyan => "36",
            Paint::Dim => "2",
        }
    }

    /// `text` in this colour when `colour` is on, else as it is.
    pub(super) fn apply(self, text: &str, colour: bool) -> String {
        if colour && !text.is_empty() { format!("\x1b[{}m{text}\x1b[0m", self.sgr()) } else { text.to_owned() }
    }
}

/// One row of a [`table`].
pub(super) struct Row {
    /// The cells, one per header column.
    pub(super) cells: Vec<String>,
    /// A colour per cell (missing entries are plain), applied after padding so that columns stay aligned.
    pub(super) paints: Vec<Option<Paint>>,
    /// Lines printed under the row, indented to its second column.
    pub(super) notes: Vec<String>,
}

/// Left-aligned columns two spaces apart, without trailing spaces.
pub(super) fn table(out: &mut dyn Write, header: &[&str], rows: &[Row]) -> io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(&row.cells) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>, paints: &[Option<Paint>]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            match paints.get(i).copied().flatten() {
                Some(paint) => s.push_str(&paint.apply(cell, true)),
                None => s.push_str(cell),
            }
            s.extend(std::iter::repeat_n(' ', w.saturating_sub(cell.chars().count())));
        }
        s.trim_end().to_owned()
    };
    writeln!(out, "{}", line(&mut header.iter().copied(), &[]))?;
    let indent = " ".repeat(widths.first().map_or(0, |w| w + 2));
    for row in rows {
        writeln!(out, "{}", line(&mut row.cells.iter().map(String::as_str), &row.paints))?;
        for note in &row.notes {
            writeln!(out, "{indent}{note}")?;
        }
    }
    Ok(())
}
