//! A transcoded call's messages: the gRPC request built from a JSON body, the template's
//! variables and the query string (proto3 JSON mapping, prost-reflect's serde support), and
//! the gRPC answer turned back into JSON. Pure; every error is a sentence for the client
//! (request side, a 400) or the log (answer side, a 502).
//!
//! What the path binds wins: a body or query that tries to set a field the path already set
//! is refused, so the field a route's policies saw in the path is the one the backend gets;
//! so is a query parameter setting another member of a oneof the path or body set (it would
//! clear theirs), and a body setting such a member beside a path's field.
//! Unknown JSON fields and unknown query parameters are refused too (proto3 JSON parsers may
//! ignore them; a gateway that did would accept keys that do nothing).

use base64::Engine as _;
use prost::Message as _;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, SerializeOptions,
    Value,
};

use super::rules::{BodyRule, Rule};

/// Most query parameters one request may set: each is a field lookup and a value.
pub const MAX_QUERY_FIELDS: usize = 256;

/// Most JSON values (array elements, object members, containers) one request body may hold.
/// Each becomes a prost-reflect `Value` or message of 50–100 bytes: unbounded, a 4 MiB body of
/// `"",` or `{},` would take 30 times its size in memory (measured: 3 MiB → 100 MB). At this
/// bound a body costs at most about 20 MB beside its bytes.
pub const MAX_JSON_VALUES: usize = 1 << 18;

/// An upper bound of the values in a JSON text (`,` `:` `[` `{` outside strings, plus one),
/// counted before anything is built from it.
pub fn json_values(body: &[u8]) -> usize {
    1 + crate::json_scan::outside_strings(body)
        .filter(|b| matches!(b, b',' | b':' | b'[' | b'{'))
        .count()
}

/// The gRPC request message of a call to `rule`'s method.
pub fn request(
    rule: &Rule,
    vars: &[(&[String], String)],
    query: Option<&str>,
    body: &[u8],
) -> Result<DynamicMessage, String> {
    if json_values(body) > MAX_JSON_VALUES {
        return Err(format!(
            "the body holds more than {MAX_JSON_VALUES} JSON values"
        ));
    }
    let mut msg = match &rule.body {
        BodyRule::None if body.iter().any(|b| !b.is_ascii_whitespace()) => {
            return Err("this method takes no request body".into())
        }
        BodyRule::None => DynamicMessage::new(rule.input.clone()),
        BodyRule::Whole => from_json(rule.input.clone(), body)?,
        BodyRule::Field(f) => {
            // The body is the field's JSON value: read as the one field of a message.
            let value: serde_json::Value = if body.iter().all(u8::is_ascii_whitespace) {
                serde_json::Value::Null
            } else {
                serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?
            };
            let wrapped = serde_json::json!({ f.json_name(): value });
            DynamicMessage::deserialize_with_options(rule.input.clone(), wrapped, &strict())
                .map_err(|e| format!("the body does not fit {}: {e}", f.full_name()))?
        }
    };
    for ((_, text), chain) in vars.iter().zip(&rule.path_fields) {
        let Some((last, outer)) = chain.split_last() else {
            continue;
        };
        let value = scalar(last, text)?;
        // Nor a oneof member beside it (or beside a message on its way): the path's value
        // would clear it, a body field accepted and dropped.
        if let Some(s) = oneof_taken(&msg, chain) {
            return Err(format!(
                "field \"{}\" is in a oneof with \"{}\", which the path sets; it must not be in the body",
                s.name(),
                dotted(chain)
            ));
        }
        // The body may not have set what the path binds.
        if nested(&mut msg, outer).has_field(last) && !matches!(rule.body, BodyRule::None) {
            return Err(format!(
                "field \"{}\" is set by the path and must not be in the body",
                dotted(chain)
            ));
        }
        nested(&mut msg, outer).set_field(last, value);
    }
    match (query.filter(|q| !q.is_empty()), &rule.body) {
        (None, _) => {}
        // Every field comes from the body: a query parameter would do nothing.
        (Some(_), BodyRule::Whole) => {
            return Err("this method takes its fields from the body, not the query".into())
        }
        (Some(q), _) => query_fields(rule, &mut msg, q)?,
    }
    Ok(msg)
}

fn strict() -> DeserializeOptions {
    DeserializeOptions::new().deny_unknown_fields(true)
}

fn from_json(desc: MessageDescriptor, body: &[u8]) -> Result<DynamicMessage, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err("the request body is empty; this method takes a JSON object".into());
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let msg = DynamicMessage::deserialize_with_options(desc, &mut de, &strict())
        .map_err(|e| format!("the body does not fit the request message: {e}"))?;
    de.end()
        .map_err(|e| format!("the body is not one JSON value: {e}"))?;
    Ok(msg)
}

fn dotted(chain: &[FieldDescriptor]) -> String {
    chain.iter().map(|f| f.name()).collect::<Vec<_>>().join(".")
}

/// The message `outer` (a chain of singular message fields) leads to, made if missing.
fn nested<'m>(msg: &'m mut DynamicMessage, outer: &[FieldDescriptor]) -> &'m mut DynamicMessage {
    let mut cur = msg;
    for f in outer {
        cur = match cur.get_field_mut(f) {
            Value::Message(m) => m,
            // `field_path` admitted only message fields on the way.
            other => unreachable!("field {} is not a message: {other:?}", f.full_name()),
        };
    }
    cur
}

/// Query parameters (`a.b=v`, repeated fields by repeating the key) into `msg`.
fn query_fields(rule: &Rule, msg: &mut DynamicMessage, query: &str) -> Result<(), String> {
    let mut seen: Vec<String> = Vec::new();
    for (n, (key, text)) in form_urlencoded::parse(query.as_bytes()).enumerate() {
        if n >= MAX_QUERY_FIELDS {
            return Err(format!("more than {MAX_QUERY_FIELDS} query parameters"));
        }
        let chain = query_path(&rule.input, &key)?;
        let bound = |c: &[FieldDescriptor]| {
            let k = c.len().min(chain.len());
            c[..k] == chain[..k]
        };
        if rule.path_fields.iter().any(|c| bound(c)) {
            return Err(format!(
                "query parameter \"{key}\" sets a field the path binds"
            ));
        }
        if let BodyRule::Field(f) = &rule.body {
            if chain[0] == *f {
                return Err(format!(
                    "query parameter \"{key}\" sets the field the body binds"
                ));
            }
        }
        // Setting a member of a oneof clears its other member: the query applies last, so
        // it would silently undo what the path (or the body) set.
        let body_field = match &rule.body {
            BodyRule::Field(f) => Some(std::slice::from_ref(f)),
            _ => None,
        };
        if rule
            .path_fields
            .iter()
            .map(Vec::as_slice)
            .chain(body_field)
            .any(|c| oneof_sibling(c, &chain))
        {
            return Err(format!(
                "query parameter \"{key}\" sets a oneof member whose sibling the path or body set"
            ));
        }
        let Some((last, outer)) = chain.split_last() else {
            continue;
        };
        let value = scalar(last, &text)?;
        let target = nested(msg, outer);
        if last.is_list() {
            if let Value::List(l) = target.get_field_mut(last) {
                l.push(value);
            }
        } else {
            let name = dotted(&chain);
            if seen.contains(&name) {
                return Err(format!(
                    "query parameter \"{key}\" is given twice but is not repeated"
                ));
            }
            seen.push(name);
            target.set_field(last, value);
        }
    }
    Ok(())
}

/// A field `msg` has set that shares a oneof with a field of `chain` (walked from `msg`).
fn oneof_taken(msg: &DynamicMessage, chain: &[FieldDescriptor]) -> Option<FieldDescriptor> {
    let (f, rest) = chain.split_first()?;
    if let Some(o) = f.containing_oneof() {
        if let Some(s) = o.fields().find(|s| s != f && msg.has_field(s)) {
            return Some(s);
        }
    }
    if rest.is_empty() || !msg.has_field(f) {
        return None;
    }
    match &*msg.get_field(f) {
        Value::Message(m) => oneof_taken(m, rest),
        _ => None,
    }
}

/// Whether chains `a` and `b` part at two members of one oneof (the same fields before).
pub(crate) fn oneof_sibling(a: &[FieldDescriptor], b: &[FieldDescriptor]) -> bool {
    let k = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    match (a.get(k), b.get(k)) {
        (Some(x), Some(y)) => x
            .containing_oneof()
            .is_some_and(|o| y.containing_oneof() == Some(o)),
        _ => false,
    }
}

/// The fields a query key names (proto or JSON names, dotted): singular messages on the
/// way, a scalar or repeated scalar at the end.
fn query_path(msg: &MessageDescriptor, key: &str) -> Result<Vec<FieldDescriptor>, String> {
    let parts: Vec<&str> = key.split('.').collect();
    let mut cur = msg.clone();
    let mut out = Vec::with_capacity(parts.len());
    for (i, p) in parts.iter().enumerate() {
        let f = cur
            .get_field_by_name(p)
            .or_else(|| cur.get_field_by_json_name(p))
            .ok_or_else(|| format!("unknown query parameter \"{key}\""))?;
        let last = i + 1 == parts.len();
        match f.kind() {
            _ if f.is_map() => return Err(format!("query parameter \"{key}\" names a map")),
            Kind::Message(m) if !last && !f.is_list() => cur = m,
            Kind::Message(_) => {
                return Err(format!(
                    "query parameter \"{key}\" names a message, not a value"
                ))
            }
            _ if !last => return Err(format!("unknown query parameter \"{key}\"")),
            _ => {}
        }
        out.push(f);
    }
    Ok(out)
}

/// A path or query text as the value of scalar field `f`.
pub fn scalar(f: &FieldDescriptor, text: &str) -> Result<Value, String> {
    let bad = |what: &str| format!("field \"{}\" takes {what}, not \"{text}\"", f.name());
    Ok(match f.kind() {
        Kind::String => Value::String(text.to_string()),
        Kind::Bool => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(bad("true or false")),
        },
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::I32(text.parse().map_err(|_| bad("a 32-bit integer"))?)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            Value::I64(text.parse().map_err(|_| bad("a 64-bit integer"))?)
        }
        Kind::Uint32 | Kind::Fixed32 => Value::U32(
            text.parse()
                .map_err(|_| bad("an unsigned 32-bit integer"))?,
        ),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(
            text.parse()
                .map_err(|_| bad("an unsigned 64-bit integer"))?,
        ),
        Kind::Double => Value::F64(text.parse().map_err(|_| bad("a number"))?),
        Kind::Float => Value::F32(text.parse().map_err(|_| bad("a number"))?),
        Kind::Bytes => {
            use base64::engine::general_purpose::{
                STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
            };
            let b = [STANDARD, URL_SAFE, STANDARD_NO_PAD, URL_SAFE_NO_PAD]
                .iter()
                .find_map(|e| e.decode(text).ok())
                .ok_or_else(|| bad("base64 bytes"))?;
            Value::Bytes(b.into())
        }
        Kind::Enum(e) => match e.get_value_by_name(text) {
            Some(v) => Value::EnumNumber(v.number()),
            None => Value::EnumNumber(
                text.parse::<i32>()
                    .ok()
                    .filter(|n| e.get_value(*n).is_some())
                    .ok_or_else(|| bad(&format!("a value of {}", e.full_name())))?,
            ),
        },
        Kind::Message(m) => {
            return Err(format!(
                "field \"{}\" is a message ({})",
                f.name(),
                m.full_name()
            ))
        }
    })
}

/// The JSON answer for a backend's response message (`Err`: it did not decode).
pub fn response(rule: &Rule, bytes: &[u8]) -> Result<Vec<u8>, String> {
    if super::wire::values(&rule.output, bytes) > MAX_JSON_VALUES {
        return Err(format!(
            "the backend's answer holds more than {MAX_JSON_VALUES} values"
        ));
    }
    let msg = DynamicMessage::decode(rule.output.clone(), bytes).map_err(|e| {
        format!(
            "the backend's answer is not a {}: {e}",
            rule.output.full_name()
        )
    })?;
    let opts = SerializeOptions::new();
    let mut ser = serde_json::Serializer::new(Vec::with_capacity(bytes.len() * 2 + 2));
    match &rule.response_body {
        None => {
            msg.serialize_with_options(&mut ser, &opts)
                .map_err(|e| e.to_string())?;
            Ok(ser.into_inner())
        }
        Some(f) => {
            let whole = msg
                .serialize_with_options(serde_json::value::Serializer, &opts)
                .map_err(|e| e.to_string())?;
            let part = match whole.get(f.json_name()) {
                Some(v) => v.clone(),
                // A field at its default is left out of a message's JSON, but as the whole
                // answer it is its default (`""`, `0`, `[]`), not `null`.
                None => {
                    let all = opts.clone().skip_default_fields(false);
                    msg.serialize_with_options(serde_json::value::Serializer, &all)
                        .map_err(|e| e.to_string())?
                        .get(f.json_name())
                        .cloned()
                        .unwrap_or(serde_json::Value::Null)
                }
            };
            serde_json::to_vec(&part).map_err(|e| e.to_string())
        }
    }
}

/// The request message's wire bytes.
pub fn encode(msg: &DynamicMessage) -> Vec<u8> {
    msg.encode_to_vec()
}
