//! XML to JSON, for backends that answer `application/xml` to clients that want JSON. The
//! mapping is fixed and deterministic:
//!
//! - the document becomes `{ "<root name>": <element> }`;
//! - an element with neither attributes nor child elements becomes its text (a string;
//!   `""` when empty);
//! - otherwise it becomes an object: each attribute as `"@name": "value"`, each child
//!   element under its name (several children of one name make an array, in document
//!   order; one child is a value, not an array), and any non-blank text as `"#text"`;
//! - names keep their namespace prefix (`ns:item`); text is unescaped, CDATA taken as text;
//!   comments, processing instructions and the declaration are dropped. Nothing is
//!   converted to numbers or booleans: XML has no types, so every value is a string.
//!
//! Keys keep document order. Pure.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use serde_json::{Map, Value};

/// Deepest nesting accepted (a guard against documents built to exhaust the stack).
const MAX_DEPTH: usize = 256;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum XmlError {
    #[error("malformed XML: {0}")]
    Malformed(String),
    #[error("the XML has no root element")]
    NoRoot,
    #[error("the XML nests deeper than {MAX_DEPTH} elements")]
    TooDeep,
}

struct Node {
    name: String,
    fields: Map<String, Value>,
    text: String,
    has_children: bool,
    /// Names that already became arrays (a child whose own value is an array is not a
    /// repetition).
    repeated: std::collections::HashSet<String>,
}

impl Node {
    fn open(e: &BytesStart<'_>) -> Result<Self, XmlError> {
        let name = e.name().as_ref().to_string();
        let mut fields = Map::new();
        for a in e.attributes() {
            let a = a.map_err(|e| XmlError::Malformed(e.to_string()))?;
            let key = format!("@{}", a.key.as_ref());
            let value = a
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|e| XmlError::Malformed(e.to_string()))?
                .into_owned();
            fields.insert(key, Value::String(value));
        }
        Ok(Self {
            name,
            fields,
            text: String::new(),
            has_children: false,
            repeated: std::collections::HashSet::new(),
        })
    }

    fn close(mut self) -> (String, Value) {
        let value = if self.fields.is_empty() && !self.has_children {
            Value::String(self.text)
        } else {
            if !self.text.trim().is_empty() {
                self.fields
                    .insert("#text".into(), Value::String(self.text.trim().to_string()));
            }
            Value::Object(self.fields)
        };
        (self.name, value)
    }

    fn add_child(&mut self, name: String, value: Value) {
        self.has_children = true;
        match self.fields.get_mut(&name) {
            None => {
                self.fields.insert(name, value);
            }
            Some(Value::Array(list)) if self.repeated.contains(&name) => list.push(value),
            Some(existing) => {
                let first = std::mem::take(existing);
                *existing = Value::Array(vec![first, value]);
                self.repeated.insert(name);
            }
        }
    }
}

/// The JSON form of an XML document.
pub fn to_json(xml: &[u8]) -> Result<Value, XmlError> {
    let mut reader = Reader::from_reader(xml);
    reader.config_mut().trim_text(false);
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<(String, Value)> = None;
    let mut buf = Vec::new();
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| XmlError::Malformed(e.to_string()))?;
        match event {
            Event::Start(e) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(XmlError::TooDeep);
                }
                if root.is_some() {
                    return Err(XmlError::Malformed("more than one root element".into()));
                }
                stack.push(Node::open(&e)?);
            }
            Event::Empty(e) => {
                let (name, value) = Node::open(&e)?.close();
                match stack.last_mut() {
                    Some(parent) => parent.add_child(name, value),
                    None if root.is_none() => root = Some((name, value)),
                    None => return Err(XmlError::Malformed("more than one root element".into())),
                }
            }
            Event::End(_) => {
                let node = stack.pop().ok_or_else(|| {
                    XmlError::Malformed("a closing tag without its opening".into())
                })?;
                let (name, value) = node.close();
                match stack.last_mut() {
                    Some(parent) => parent.add_child(name, value),
                    None => root = Some((name, value)),
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                if let Some(top) = stack.last_mut() {
                    let resolved = if r.is_char_ref() {
                        r.resolve_char_ref()
                            .map_err(|e| XmlError::Malformed(e.to_string()))?
                            .map(String::from)
                    } else {
                        quick_xml::escape::resolve_predefined_entity(&r.into_inner())
                            .map(str::to_string)
                    };
                    match resolved {
                        Some(text) => top.text.push_str(&text),
                        None => return Err(XmlError::Malformed("an unknown entity".into())),
                    }
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.into_inner());
                }
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
        }
        buf.clear();
    }
    if !stack.is_empty() {
        return Err(XmlError::Malformed(
            "the document ends inside an element".into(),
        ));
    }
    let (name, value) = root.ok_or(XmlError::NoRoot)?;
    let mut doc = Map::new();
    doc.insert(name, value);
    Ok(Value::Object(doc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn the_documented_mapping() {
        let xml = br#"<?xml version="1.0"?>
<!-- a catalogue -->
<catalog xmlns:x="urn:x" version="2">
  <book id="b1"><title>Rust &amp; you</title><tag>a</tag><tag>b</tag></book>
  <book id="b2"><title><![CDATA[<raw>]]></title><x:note/></book>
  <empty></empty>
  <mixed kind="m">text <b>bold</b></mixed>
</catalog>"#;
        let got = to_json(xml).expect("valid");
        assert_eq!(
            got,
            json!({
                "catalog": {
                    "@xmlns:x": "urn:x",
                    "@version": "2",
                    "book": [
                        { "@id": "b1", "title": "Rust & you", "tag": ["a", "b"] },
                        { "@id": "b2", "title": "<raw>", "x:note": "" }
                    ],
                    "empty": "",
                    "mixed": { "@kind": "m", "b": "bold", "#text": "text" }
                }
            })
        );
        // Document order of keys is kept.
        let keys: Vec<&String> = got["catalog"].as_object().expect("object").keys().collect();
        assert_eq!(keys, ["@xmlns:x", "@version", "book", "empty", "mixed"]);
    }

    #[test]
    fn malformed_documents_are_errors() {
        assert!(matches!(
            to_json(b"<a><b></a>"),
            Err(XmlError::Malformed(_))
        ));
        assert_eq!(to_json(b""), Err(XmlError::NoRoot));
        assert!(to_json(b"<a/><b/>").is_err());
        assert!(to_json(b"<a>").is_err());
        let deep = "<a>".repeat(300) + &"</a>".repeat(300);
        assert_eq!(to_json(deep.as_bytes()), Err(XmlError::TooDeep));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = to_json(&bytes);
        }
    }
}
