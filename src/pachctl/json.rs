//! A JSON tree that keeps objects' keys in file order and wipes its strings when dropped.
//!
//! `serde_json::Value` sorts keys (the crate's `preserve_order` feature is off), so a file pachctl wrote in its
//! struct order would come back reordered. This tree keeps every object as a list of entries, so that a file
//! edited in one place is rewritten with everything else where it was. pachctl's file holds the tokens of all
//! its contexts, so every string is zeroed when the tree is dropped.
//!
//! Numbers go through `serde_json::Number`: integers up to 64 bits and finite floats are kept exactly; a number
//! beyond those (none of pachctl's fields) would come back as its nearest `f64`.

use std::fmt;
use std::io::{self, Write};

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use zeroize::{Zeroize, Zeroizing};

/// One JSON value.
pub(crate) enum Node {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Node>),
    Object(Object),
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Node::String(s) = self {
            s.zeroize();
        }
    }
}

impl Node {
    /// A string node.
    pub(crate) fn string(s: impl Into<String>) -> Self {
        Node::String(s.into())
    }

    pub(crate) fn as_object(&self) -> Option<&Object> {
        match self {
            Node::Object(o) => Some(o),
            _ => None,
        }
    }

    pub(crate) fn as_object_mut(&mut self) -> Option<&mut Object> {
        match self {
            Node::Object(o) => Some(o),
            _ => None,
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Node::String(s) => Some(s),
            _ => None,
        }
    }
}

/// An object: its entries in file order (duplicates, which JSON allows and pachctl rejects, are kept as they are).
#[derive(Default)]
pub(crate) struct Object(Vec<(String, Node)>);

impl Object {
    /// The first of `names` that is a key here. pachctl reads both `session_token` and `sessionToken`, so an edit
    /// goes to whichever spelling the file already uses.
    pub(crate) fn key_of<'a>(&self, names: &[&'a str]) -> Option<&'a str> {
        names.iter().copied().find(|n| self.0.iter().any(|(k, _)| k == n))
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub(crate) fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        self.0.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The value of the first of `names` present, as a string; `None` when absent or not a string.
    pub(crate) fn str_of(&self, names: &[&str]) -> Option<&str> {
        self.get(self.key_of(names)?)?.as_str()
    }

    /// Replaces the value of `key` where it stands, or appends the entry.
    pub(crate) fn set(&mut self, key: &str, value: Node) {
        match self.get_mut(key) {
            Some(slot) => *slot = value,
            None => self.0.push((key.to_owned(), value)),
        }
    }

    /// The object under `key`, appended empty when the key is absent; `None` when the key holds something else.
    pub(crate) fn object_entry(&mut self, key: &str) -> Option<&mut Object> {
        if self.get(key).is_none() {
            self.0.push((key.to_owned(), Node::Object(Object::default())));
        }
        self.get_mut(key)?.as_object_mut()
    }

    /// Removes every entry named `key`; whether there was one.
    pub(crate) fn remove(&mut self, key: &str) -> bool {
        let before = self.0.len();
        self.0.retain(|(k, _)| k != key);
        self.0.len() != before
    }

    /// The entries in file order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
}

/// Why bytes are not a JSON document: the kind of error and where, never the text around it (which may hold a
/// token).
#[derive(Debug)]
pub(crate) struct ParseError {
    pub(crate) line: usize,
    pub(crate) column: usize,
    pub(crate) eof: bool,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.eof {
            write!(f, "it ends early (line {} column {})", self.line, self.column)
        } else {
            write!(f, "syntax error at line {} column {}", self.line, self.column)
        }
    }
}

/// Parses a whole document (nothing but whitespace may follow the value).
pub(crate) fn parse(bytes: &[u8]) -> Result<Node, ParseError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let to_error = |e: serde_json::Error| ParseError {
        line: e.line(),
        column: e.column(),
        eof: e.classify() == serde_json::error::Category::Eof,
    };
    let node = Node::deserialize(&mut de).map_err(to_error)?;
    de.end().map_err(to_error)?;
    Ok(node)
}

/// Writes `node` the way Go's `json.MarshalIndent(v, "", "  ")` lays it out (pachctl's own format), into a
/// buffer sized exactly beforehand so that no reallocation leaves a copy of a token behind.
pub(crate) fn to_pretty(node: &Node, trailing_newline: bool) -> io::Result<Zeroizing<Vec<u8>>> {
    let mut counter = Counter(0);
    write_pretty(&mut counter, node)?;
    let mut out = Zeroizing::new(Vec::with_capacity(counter.0 + 1));
    write_pretty(&mut *out, node)?;
    if trailing_newline {
        out.push(b'\n');
    }
    Ok(out)
}

fn write_pretty(w: &mut impl Write, node: &Node) -> io::Result<()> {
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"  ");
    let mut ser = serde_json::Serializer::with_formatter(w, formatter);
    node.serialize(&mut ser).map_err(io::Error::other)
}

/// Counts bytes instead of keeping them.
struct Counter(usize);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => s.serialize_unit(),
            Node::Bool(b) => s.serialize_bool(*b),
            Node::Number(n) => n.serialize(s),
            Node::String(v) => s.serialize_str(v),
            Node::Array(items) => s.collect_seq(items),
            Node::Object(o) => {
                let mut map = s.serialize_map(Some(o.0.len()))?;
                for (k, v) in &o.0 {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        serde_json::Number::from_f64(v).map(Node::Number).ok_or_else(|| E::custom("a number that is not finite"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::string(v))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value()?;
            entries.push((key, value));
        }
        Ok(Node::Object(Object(entries)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_go_indented_document_round_trips_byte_for_byte() {
        let text = "{\n  \"z\": 1,\n  \"a\": {\n    \"m\": [\n      true,\n      null,\n      -2.5,\n      {}\n    ],\n    \"b\": []\n  },\n  \"s\": \"\\u0001é\\\"\",\n  \"big\": 18446744073709551615\n}";
        let node = parse(text.as_bytes()).unwrap();
        let out = to_pretty(&node, false).unwrap();
        assert_eq!(std::str::from_utf8(&out).unwrap(), text);
        assert_eq!(out.capacity(), out.len() + 1, "the buffer was sized once");
    }

    #[test]
    fn parse_errors_say_where_but_not_what() {
        let err = parse(b"{\"session_token\": \"0123456789abcdef\" oops}").err().unwrap();
        let shown = err.to_string();
        assert!(shown.contains("line 1") && !shown.contains("0123"), "{shown}");
        assert!(parse(b"{\"a\": ").err().unwrap().eof);
        assert!(parse(b"{} {}").is_err(), "trailing data is an error");
    }

    #[test]
    fn set_replaces_in_place_and_appends_new_keys_last() {
        let mut node = parse(br#"{"a":1,"b":2}"#).unwrap();
        let o = node.as_object_mut().unwrap();
        o.set("a", Node::string("x"));
        o.set("c", Node::Null);
        let keys: Vec<&str> = o.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert_eq!(o.key_of(&["sessionToken", "b"]), Some("b"));
    }
}
