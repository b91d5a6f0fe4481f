//! From TOML text to the raw structs, collecting every syntax, type and unknown-key error
//! instead of stopping at the first. Each `[[listener]]`, `[[pool]]` and table is deserialized on
//! its own; when serde rejects a key, that key is dropped and the item is tried again, so one
//! run reports every bad key. Pure; no I/O.

use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::diag::{did_you_mean, Diagnostic};
use super::raw::{
    self, RawAdmin, RawGlobal, RawListener, RawPolicy, RawPool, RawRoute, RawTracing,
};

/// The raw config plus where its sections start, for errors about whole sections.
#[derive(Debug, Default)]
pub struct RawConfig {
    pub global: Option<RawGlobal>,
    pub admin: Option<(RawAdmin, Range<usize>)>,
    pub tracing: Option<RawTracing>,
    pub listeners: Vec<(RawListener, Range<usize>)>,
    pub pools: Vec<(RawPool, Range<usize>)>,
    pub routes: Vec<(RawRoute, Range<usize>)>,
    /// `[policy.NAME]`s with the span of their name.
    pub policies: Vec<(String, Range<usize>, RawPolicy)>,
}

/// Retries per item: each retry drops one bad key, so this bounds the errors per item.
const MAX_ERRORS_PER_ITEM: usize = 32;

pub fn parse(text: &str, diags: &mut Vec<Diagnostic>) -> RawConfig {
    let (doc, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        for e in syntax {
            let mut d = Diagnostic::error(format!("invalid TOML: {}", first_line(e.message())));
            if let Some(span) = e.span() {
                d = d.at(span);
            }
            diags.push(d);
        }
        return RawConfig::default();
    }
    let mut raw = RawConfig::default();
    // The document is consumed item by item: its tree costs about 1 KB per inline table
    // (a B-tree node each), so a 100,000-backend pool must exist once, not once per copy.
    for (key, value) in doc.into_inner() {
        let name: &str = key.get_ref();
        let kspan = key.span();
        match name {
            "global" => raw.global = item::<RawGlobal>(value, "global", text, diags),
            "admin" => {
                let span = value.span();
                raw.admin = item::<RawAdmin>(value, "admin", text, diags).map(|a| (a, span))
            }
            "tracing" => raw.tracing = item::<RawTracing>(value, "tracing", text, diags),
            "listener" => {
                for (i, v) in array_of_tables(value, "listener", diags) {
                    let (path, span) = (format!("listener[{i}]"), v.span());
                    if let Some(l) = item::<RawListener>(v, &path, text, diags) {
                        raw.listeners.push((l, span));
                    }
                }
            }
            "pool" => {
                for (i, v) in array_of_tables(value, "pool", diags) {
                    let (path, span) = (format!("pool[{i}]"), v.span());
                    if let Some(p) = item::<RawPool>(v, &path, text, diags) {
                        raw.pools.push((p, span));
                    }
                }
            }
            "route" => {
                for (i, v) in array_of_tables(value, "route", diags) {
                    let (path, span) = (format!("route[{i}]"), v.span());
                    if let Some(r) = item::<RawRoute>(v, &path, text, diags) {
                        raw.routes.push((r, span));
                    }
                }
            }
            "policy" => match value.into_inner() {
                DeValue::Table(t) => {
                    for (pname, v) in t {
                        let path = format!("policy.{}", pname.get_ref());
                        if let Some(p) = item::<RawPolicy>(v, &path, text, diags) {
                            raw.policies
                                .push((pname.get_ref().to_string(), pname.span(), p));
                        }
                    }
                    // The table comes back sorted by name; keep the file's order.
                    raw.policies.sort_by_key(|(_, span, _)| span.start);
                }
                other => diags.push(
                    Diagnostic::error(format!(
                        "expected tables [policy.NAME], found {}",
                        other.type_str()
                    ))
                    .at(kspan)
                    .key("policy"),
                ),
            },
            other => {
                let mut d = Diagnostic::error(format!("unknown top-level key `{other}`"))
                    .at(kspan)
                    .key(other);
                d = match did_you_mean(other, raw::TOP_KEYS) {
                    Some(s) => d.help(format!("did you mean `{s}`?")),
                    None => {
                        d.help("top-level sections are [global], [admin], [tracing], [[listener]], [[pool]], [[route]]")
                    }
                };
                diags.push(d);
            }
        }
    }
    raw
}

fn array_of_tables<'i>(
    value: Spanned<DeValue<'i>>,
    key: &str,
    diags: &mut Vec<Diagnostic>,
) -> Vec<(usize, Spanned<DeValue<'i>>)> {
    let span = value.span();
    match value.into_inner() {
        DeValue::Array(items) => items.into_iter().enumerate().collect(),
        other => {
            diags.push(
                Diagnostic::error(format!(
                    "expected an array of tables ([[{key}]]), found {}",
                    other.type_str()
                ))
                .at(span)
                .key(key),
            );
            Vec::new()
        }
    }
}

/// Deserializes one section. A valid one (the usual case) is read from `value` itself, with
/// no copy; an invalid one is parsed again from `text` and its errors collected by
/// [`item_errors`].
fn item<T: DeserializeOwned>(
    value: Spanned<DeValue<'_>>,
    path: &str,
    text: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    let span = value.span();
    if let Ok(t) = T::deserialize(ValueDeserializer::from(value)) {
        return Some(t);
    }
    let key = path.split(['[', '.']).next().unwrap_or(path);
    let Some(again) = reparse_at(text, key, &span) else {
        // The same text parses the same way, so this is not expected; but an invalid item
        // must never pass unreported.
        diags.push(
            Diagnostic::error(format!("`{path}` is invalid"))
                .at(span)
                .key(path),
        );
        return None;
    };
    item_errors(again, path, diags)
}

/// The item of `text` at `span`: the value of top-level `key` itself (`[global]`,
/// `[admin]`), or one of the items in it (an element of `[[pool]]`, a `[policy.NAME]`).
/// An array or the policy table can span exactly its one item, so those are always entered.
fn reparse_at<'i>(text: &'i str, key: &str, span: &Range<usize>) -> Option<Spanned<DeValue<'i>>> {
    let (doc, _) = DeTable::parse_recoverable(text);
    let (_, v) = doc
        .into_inner()
        .into_iter()
        .find(|(k, _)| k.get_ref() == key)?;
    let entered = key == "policy" || matches!(v.get_ref(), DeValue::Array(_));
    if !entered {
        return (v.span() == *span).then_some(v);
    }
    let items = match v.into_inner() {
        DeValue::Array(items) => items,
        DeValue::Table(t) => t.into_iter().map(|(_, v)| v).collect(),
        _ => return None,
    };
    items.into_iter().find(|v| v.span() == *span)
}

/// Deserializes an invalid section, dropping each rejected key and retrying so all its
/// errors show.
fn item_errors<T: DeserializeOwned>(
    mut value: Spanned<DeValue<'_>>,
    path: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    let mut removed: Vec<String> = Vec::new();
    for _ in 0..MAX_ERRORS_PER_ITEM {
        let err = match T::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(t) => return Some(t),
            Err(e) => e,
        };
        let message = first_line(err.message()).to_string();
        let span = err.span().unwrap_or_else(|| value.span());
        let (key_path, leaf_table) = locate(&value, &span, path);
        // A key we dropped for a bad type now shows up as missing: already reported.
        if let Some(missing) = missing_field(&message) {
            if removed.iter().any(|r| r == missing) {
                return None;
            }
        }
        diags.push(describe(&message, span.clone(), &key_path, &leaf_table));
        match remove_at(&mut value, &span) {
            Some(key) => removed.push(key),
            None => return None,
        }
    }
    None
}

fn describe(message: &str, span: Range<usize>, key_path: &str, table: &str) -> Diagnostic {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or(rest);
        let known = raw::known_keys(table);
        let d = Diagnostic::error(format!("unknown key `{field}`"))
            .at(span)
            .key(key_path);
        return match did_you_mean(field, known) {
            Some(s) => d.help(format!("did you mean `{s}`?")),
            None if !known.is_empty() => d.help(format!("allowed here: {}", known.join(", "))),
            None => d,
        };
    }
    let message = message
        .replace("expected i64", "expected an integer")
        .replace("expected f64", "expected a number");
    Diagnostic::error(message).at(span).key(key_path)
}

fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s).trim()
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

/// Key path of the deepest key whose key or value span holds `span`, and the name of the
/// table that key lives in (for the list of allowed keys).
fn locate(value: &Spanned<DeValue<'_>>, span: &Range<usize>, prefix: &str) -> (String, String) {
    let mut path = prefix.to_string();
    let mut table = if prefix.starts_with("policy.") {
        "policy".to_string()
    } else {
        prefix
            .split('[')
            .next()
            .unwrap_or(prefix)
            .rsplit('.')
            .next()
            .unwrap_or("")
            .to_string()
    };
    let mut cur = value;
    loop {
        let next = match cur.get_ref() {
            DeValue::Table(t) => t.iter().find_map(|(k, v)| {
                (contains(&k.span(), span) || contains(&v.span(), span)).then(|| {
                    (
                        format!(".{}", k.get_ref()),
                        Some(k.get_ref().to_string()),
                        v,
                    )
                })
            }),
            DeValue::Array(items) => items
                .iter()
                .enumerate()
                .find(|(_, v)| contains(&v.span(), span))
                .map(|(i, v)| (format!("[{i}]"), None, v)),
            _ => None,
        };
        match next {
            Some((seg, key, v)) if !std::ptr::eq(v, cur) => {
                path.push_str(&seg);
                if let (Some(k), DeValue::Table(_)) = (key.clone(), cur.get_ref()) {
                    if matches!(v.get_ref(), DeValue::Table(_) | DeValue::Array(_)) {
                        table = k;
                    }
                }
                cur = v;
            }
            _ => return (path, table),
        }
    }
}

/// Drops the deepest table entry whose key or value holds `span`; returns its key.
fn remove_at(value: &mut Spanned<DeValue<'_>>, span: &Range<usize>) -> Option<String> {
    match value.get_mut() {
        DeValue::Table(t) => {
            let hit = t
                .iter()
                .find(|(k, v)| contains(&k.span(), span) || contains(&v.span(), span))
                .map(|(k, v)| (k.get_ref().to_string(), v.span()));
            let (key, vspan) = hit?;
            // Deeper first: a nested table may hold the real culprit.
            if vspan != *span && contains(&vspan, span) {
                if let Some(v) = t.get_mut(key.as_str()) {
                    if let Some(inner) = remove_at(v, span) {
                        return Some(inner);
                    }
                }
            }
            t.remove(key.as_str());
            Some(key)
        }
        DeValue::Array(items) => items
            .iter_mut()
            .find(|v| contains(&v.span(), span))
            .and_then(|v| remove_at(v, span)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<Diagnostic> {
        let mut d = Vec::new();
        parse(text, &mut d);
        d
    }

    #[test]
    fn every_unknown_key_in_one_item_is_reported() {
        let text = "[[pool]]\nname = \"p\"\nalgoritm = \"random\"\nbackends = [{ addr = \"127.0.0.1:1\", wieght = 2 }]\nslowstart = \"1s\"\n";
        let d = errors(text);
        let keys: Vec<_> = d.iter().filter_map(|d| d.key_path.clone()).collect();
        assert_eq!(
            keys,
            [
                "pool[0].algoritm",
                "pool[0].backends[0].wieght",
                "pool[0].slowstart"
            ],
            "{d:#?}"
        );
        assert_eq!(d[0].help.as_deref(), Some("did you mean `algorithm`?"));
        assert_eq!(d[1].help.as_deref(), Some("did you mean `weight`?"));
        // Spans point at the key itself.
        let s = d[1].span.clone().expect("span");
        assert_eq!(&text[s], "wieght");
    }

    #[test]
    fn type_errors_name_the_key_and_do_not_double_report() {
        let text = "[[listener]]\nname = 5\nbind = \"127.0.0.1:80\"\n";
        let d = errors(text);
        assert_eq!(d.len(), 1, "{d:#?}");
        assert_eq!(d[0].key_path.as_deref(), Some("listener[0].name"));
        assert!(
            d[0].message.contains("expected a string"),
            "{}",
            d[0].message
        );
    }

    #[test]
    fn syntax_errors_have_spans() {
        let d = errors("[global\nworkers = 1\n");
        assert!(!d.is_empty());
        assert!(d[0].span.is_some());
        assert!(d[0].message.starts_with("invalid TOML"));
    }

    #[test]
    fn unknown_top_level_key_suggests() {
        let d = errors("[[listeners]]\nname = \"x\"\n");
        assert_eq!(d[0].help.as_deref(), Some("did you mean `listener`?"));
    }

    #[test]
    fn an_invalid_item_is_found_again_among_valid_ones() {
        // Valid items are consumed without a copy; an invalid one is parsed again by its
        // span, which must find that item and not its neighbours or its array.
        let d = errors(
            "[global]\nworkerz = 1\n[[listener]]\nname = \"a\"\nbind = \"127.0.0.1:1\"\n\
             [[listener]]\nname = \"b\"\nbind = \"127.0.0.1:2\"\nbnid = 1\n\
             [policy.ok]\nkind = \"cors\"\n[policy.bad]\nkind = \"cors\"\nallow_originz = []\n",
        );
        let keys: Vec<_> = d.iter().filter_map(|d| d.key_path.as_deref()).collect();
        assert_eq!(
            keys,
            [
                "global.workerz",
                "listener[1].bnid",
                "policy.bad.allow_originz"
            ],
            "{d:#?}"
        );
    }

    #[test]
    fn missing_required_key_is_reported_once() {
        let d = errors("[[pool]]\nbackends = []\n");
        assert_eq!(d.len(), 1, "{d:#?}");
        assert!(d[0].message.contains("name"), "{}", d[0].message);
        assert_eq!(d[0].key_path.as_deref(), Some("pool[0]"));
    }
}
