//! Request validation against a JSON Schema (draft 2020-12), the keywords API schemas use:
//! `type` (one or a list; `integer` is a whole number), `enum`, `const`, `required`,
//! `properties`, `additionalProperties` (boolean or schema), `items`, `minItems`,
//! `maxItems`, `uniqueItems`, `minLength`, `maxLength`, `pattern`, `minimum`, `maximum`,
//! `exclusiveMinimum`, `exclusiveMaximum`, `multipleOf`, `minProperties`, `maxProperties`,
//! `allOf`, `anyOf`, `oneOf`, `not`, and `$ref` to `#/$defs/NAME`. A schema using any other
//! keyword is refused when the config loads rather than half-checked. Pure.

use regex::Regex;
use serde_json::Value;

const KNOWN: &[&str] = &[
    "$schema",
    "$id",
    "$defs",
    "$ref",
    "$comment",
    "title",
    "description",
    "examples",
    "default",
    "type",
    "enum",
    "const",
    "required",
    "properties",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minProperties",
    "maxProperties",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "format",
];

/// A checked schema.
#[derive(Debug, Clone)]
pub struct Schema {
    root: Value,
}

/// The first place a document breaks its schema: a JSON pointer and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", if pointer.is_empty() { "/" } else { pointer.as_str() })]
pub struct Violation {
    pub pointer: String,
    pub message: String,
}

impl Schema {
    /// Checks that every keyword is one this validator knows and every pattern compiles.
    pub fn new(root: Value) -> Result<Self, String> {
        check(&root, "")?;
        Ok(Self { root })
    }

    /// The schema `false`: no document passes.
    pub fn reject_all() -> Self {
        Self {
            root: Value::Bool(false),
        }
    }

    pub fn validate(&self, doc: &Value) -> Result<(), Violation> {
        self.at(&self.root, doc, String::new(), 0)
    }

    fn resolve<'a>(&'a self, s: &'a Value) -> Option<&'a Value> {
        match s.get("$ref").and_then(Value::as_str) {
            Some(r) => r
                .strip_prefix("#/$defs/")
                .and_then(|n| self.root.get("$defs")?.get(n)),
            None => Some(s),
        }
    }

    fn at(&self, schema: &Value, doc: &Value, ptr: String, depth: usize) -> Result<(), Violation> {
        let fail = |message: String| {
            Err(Violation {
                pointer: ptr.clone(),
                message,
            })
        };
        if depth > 64 {
            return fail("the schema refers to itself too deeply".into());
        }
        let Some(schema) = self.resolve(schema) else {
            return fail("an unresolvable $ref".into());
        };
        match schema {
            Value::Bool(true) => return Ok(()),
            Value::Bool(false) => return fail("nothing is allowed here".into()),
            Value::Object(_) => {}
            _ => return Ok(()),
        }
        if let Some(t) = schema.get("type") {
            let types: Vec<&str> = match t {
                Value::String(s) => vec![s.as_str()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            if !types.iter().any(|t| is_type(doc, t)) {
                return fail(format!(
                    "expected {}, found {}",
                    types.join(" or "),
                    type_name(doc)
                ));
            }
        }
        if let Some(Value::Array(options)) = schema.get("enum") {
            if !options.contains(doc) {
                return fail(format!(
                    "{doc} is not one of {}",
                    Value::Array(options.clone())
                ));
            }
        }
        if let Some(c) = schema.get("const") {
            if c != doc {
                return fail(format!("expected {c}"));
            }
        }
        let num = |k: &str| schema.get(k).and_then(Value::as_f64);
        if let Some(n) = doc.as_f64() {
            if num("minimum").is_some_and(|m| n < m) {
                return fail(format!(
                    "{n} is below the minimum {}",
                    num("minimum").unwrap_or(0.0)
                ));
            }
            if num("maximum").is_some_and(|m| n > m) {
                return fail(format!(
                    "{n} is above the maximum {}",
                    num("maximum").unwrap_or(0.0)
                ));
            }
            if num("exclusiveMinimum").is_some_and(|m| n <= m) {
                return fail(format!(
                    "{n} must be above {}",
                    num("exclusiveMinimum").unwrap_or(0.0)
                ));
            }
            if num("exclusiveMaximum").is_some_and(|m| n >= m) {
                return fail(format!(
                    "{n} must be below {}",
                    num("exclusiveMaximum").unwrap_or(0.0)
                ));
            }
            if let Some(m) = num("multipleOf").filter(|m| *m > 0.0) {
                if ((n / m) - (n / m).round()).abs() > 1e-9 {
                    return fail(format!("{n} is not a multiple of {m}"));
                }
            }
        }
        let count = |k: &str| schema.get(k).and_then(Value::as_u64);
        if let Some(s) = doc.as_str() {
            let len = s.chars().count() as u64;
            if count("minLength").is_some_and(|m| len < m) {
                return fail(format!(
                    "shorter than {} characters",
                    count("minLength").unwrap_or(0)
                ));
            }
            if count("maxLength").is_some_and(|m| len > m) {
                return fail(format!(
                    "longer than {} characters",
                    count("maxLength").unwrap_or(0)
                ));
            }
            if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
                if Regex::new(p).is_ok_and(|r| !r.is_match(s)) {
                    return fail(format!("does not match the pattern {p}"));
                }
            }
        }
        if let Some(items) = doc.as_array() {
            let n = items.len() as u64;
            if count("minItems").is_some_and(|m| n < m) {
                return fail(format!(
                    "fewer than {} items",
                    count("minItems").unwrap_or(0)
                ));
            }
            if count("maxItems").is_some_and(|m| n > m) {
                return fail(format!(
                    "more than {} items",
                    count("maxItems").unwrap_or(0)
                ));
            }
            if schema.get("uniqueItems") == Some(&Value::Bool(true)) {
                for (i, a) in items.iter().enumerate() {
                    if items[..i].contains(a) {
                        return fail(format!("item {i} repeats an earlier one"));
                    }
                }
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    self.at(item_schema, item, format!("{ptr}/{i}"), depth + 1)?;
                }
            }
        }
        if let Some(obj) = doc.as_object() {
            let n = obj.len() as u64;
            if count("minProperties").is_some_and(|m| n < m) {
                return fail(format!(
                    "fewer than {} properties",
                    count("minProperties").unwrap_or(0)
                ));
            }
            if count("maxProperties").is_some_and(|m| n > m) {
                return fail(format!(
                    "more than {} properties",
                    count("maxProperties").unwrap_or(0)
                ));
            }
            for r in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(name) = r.as_str() {
                    if !obj.contains_key(name) {
                        return fail(format!("the property \"{name}\" is required"));
                    }
                }
            }
            let props = schema.get("properties").and_then(Value::as_object);
            for (k, v) in obj {
                let path = format!("{ptr}/{}", k.replace('~', "~0").replace('/', "~1"));
                match props.and_then(|p| p.get(k)) {
                    Some(s) => self.at(s, v, path, depth + 1)?,
                    None => match schema.get("additionalProperties") {
                        Some(Value::Bool(false)) => {
                            return Err(Violation {
                                pointer: path,
                                message: format!("the property \"{k}\" is not allowed"),
                            })
                        }
                        Some(s @ Value::Object(_)) => self.at(s, v, path, depth + 1)?,
                        _ => {}
                    },
                }
            }
        }
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for s in all {
                self.at(s, doc, ptr.clone(), depth + 1)?;
            }
        }
        if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
            if !any
                .iter()
                .any(|s| self.at(s, doc, ptr.clone(), depth + 1).is_ok())
            {
                return fail("matches none of anyOf".into());
            }
        }
        if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
            let matching = one
                .iter()
                .filter(|s| self.at(s, doc, ptr.clone(), depth + 1).is_ok())
                .count();
            if matching != 1 {
                return fail(format!("matches {matching} of oneOf, not exactly one"));
            }
        }
        if let Some(not) = schema.get("not") {
            if self.at(not, doc, ptr.clone(), depth + 1).is_ok() {
                return fail("matches what `not` excludes".into());
            }
        }
        Ok(())
    }
}

fn is_type(v: &Value, t: &str) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.as_f64().is_some_and(|n| n.fract() == 0.0),
        _ => false,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every keyword known, every pattern a regex, every `$ref` local.
fn check(s: &Value, at: &str) -> Result<(), String> {
    let Value::Object(map) = s else {
        return match s {
            Value::Bool(_) => Ok(()),
            _ => Err(format!("{at}: a schema is an object or a boolean")),
        };
    };
    for (k, v) in map {
        let here = format!("{at}/{k}");
        if !KNOWN.contains(&k.as_str()) {
            return Err(format!("{here}: keyword \"{k}\" is not supported"));
        }
        match k.as_str() {
            "pattern" => {
                let p = v.as_str().ok_or(format!("{here}: a pattern is a string"))?;
                Regex::new(p).map_err(|e| format!("{here}: {e}"))?;
            }
            "$ref" => {
                let r = v.as_str().unwrap_or("");
                if !r.starts_with("#/$defs/") {
                    return Err(format!(
                        "{here}: only local references (#/$defs/NAME) are supported"
                    ));
                }
            }
            "properties" | "$defs" => {
                for (name, sub) in v.as_object().into_iter().flatten() {
                    check(sub, &format!("{here}/{name}"))?;
                }
            }
            "items" | "not" | "additionalProperties" => check(v, &here)?,
            "allOf" | "anyOf" | "oneOf" => {
                for (i, sub) in v.as_array().into_iter().flatten().enumerate() {
                    check(sub, &format!("{here}/{i}"))?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        Schema::new(json!({
            "type": "object",
            "required": ["name", "qty"],
            "additionalProperties": false,
            "properties": {
                "name": { "type": "string", "minLength": 1, "maxLength": 20, "pattern": "^[a-z]+$" },
                "qty": { "type": "integer", "minimum": 1, "maximum": 10 },
                "tags": { "type": "array", "items": { "$ref": "#/$defs/tag" }, "uniqueItems": true },
                "kind": { "enum": ["a", "b"] }
            },
            "$defs": { "tag": { "type": "string", "maxLength": 3 } }
        }))
        .expect("schema")
    }

    #[test]
    fn valid_documents_pass_and_violations_say_where() {
        let s = schema();
        assert_eq!(
            s.validate(&json!({ "name": "widget", "qty": 3, "tags": ["a", "b"], "kind": "a" })),
            Ok(())
        );
        let why = |doc: serde_json::Value| s.validate(&doc).expect_err("invalid").to_string();
        assert_eq!(
            why(json!({ "qty": 3 })),
            "/: the property \"name\" is required"
        );
        assert_eq!(
            why(json!({ "name": "w", "qty": 30 })),
            "/qty: 30 is above the maximum 10"
        );
        assert_eq!(
            why(json!({ "name": "w", "qty": 1.5 })),
            "/qty: expected integer, found number"
        );
        assert_eq!(
            why(json!({ "name": "W", "qty": 1 })),
            "/name: does not match the pattern ^[a-z]+$"
        );
        assert_eq!(
            why(json!({ "name": "w", "qty": 1, "x": 1 })),
            "/x: the property \"x\" is not allowed"
        );
        assert_eq!(
            why(json!({ "name": "w", "qty": 1, "tags": ["long"] })),
            "/tags/0: longer than 3 characters"
        );
        assert_eq!(
            why(json!({ "name": "w", "qty": 1, "tags": ["a", "a"] })),
            "/tags: item 1 repeats an earlier one"
        );
        assert_eq!(
            why(json!({ "name": "w", "qty": 1, "kind": "c" })),
            "/kind: \"c\" is not one of [\"a\",\"b\"]"
        );
        assert_eq!(why(json!([1])), "/: expected object, found array");
    }

    #[test]
    fn unknown_keywords_and_bad_patterns_are_refused() {
        assert!(Schema::new(json!({ "type": "string", "contentEncoding": "base64" })).is_err());
        assert!(Schema::new(json!({ "pattern": "(" })).is_err());
        assert!(Schema::new(json!({ "$ref": "http://example.com/s.json" })).is_err());
        assert!(
            Schema::new(json!({ "anyOf": [{ "type": "string" }, { "type": "null" }] })).is_ok()
        );
    }
}
