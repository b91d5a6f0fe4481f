//! The GraphQL request in an HTTP request (GraphQL over HTTP): `query` and `operationName`
//! from a GET query string, or from a POST `application/json` body. Pure; no I/O.
//!
//! What is ambiguous is refused rather than guessed, since lb and the backend must see the
//! same operation: a repeated parameter or JSON key, a POST that also names a query in its
//! URL, a batch (a JSON array), an encoded body lb cannot read.

use serde::Deserialize;

use super::Refusal;

/// The largest POST body lb reads to find the operation (1 MiB: far above any hand-written
/// document, far below what would make the read itself a burden).
pub const MAX_BODY: usize = 1 << 20;

/// The GraphQL request: the document and the operation it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphqlRequest {
    pub query: String,
    pub operation_name: Option<String>,
}

/// How the HTTP request carries its GraphQL request.
#[derive(Debug, Clone, Copy)]
pub enum Carrier<'a> {
    /// GET: the URL's query string (without `?`).
    Get { query: Option<&'a str> },
    /// POST: the body as sent, with its `Content-Type` and `Content-Encoding`.
    Post {
        query: Option<&'a str>,
        content_type: Option<&'a [u8]>,
        content_encoding: Option<&'a [u8]>,
        body: &'a [u8],
    },
}

/// The JSON body: `query` and `operationName`, each at most once. `variables` and
/// `extensions` go to the backend unread.
struct Body {
    query: Option<String>,
    operation_name: Option<String>,
}

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = Body;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Body, A::Error> {
                use serde::de::Error;
                let (mut query, mut name) = (None, None);
                while let Some(k) = m.next_key::<String>()? {
                    let (slot, field) = match known(&k).map_err(A::Error::custom)? {
                        Some(QUERY) => (&mut query, QUERY),
                        Some(_) => (&mut name, OPERATION_NAME),
                        None => {
                            m.next_value::<serde::de::IgnoredAny>()?;
                            continue;
                        }
                    };
                    let v: Option<String> = m.next_value()?;
                    if slot.replace(v).is_some() {
                        return Err(A::Error::duplicate_field(field));
                    }
                }
                Ok(Body {
                    query: query.flatten(),
                    operation_name: name.flatten(),
                })
            }
        }
        d.deserialize_map(Fields)
    }
}

const QUERY: &str = "query";
const OPERATION_NAME: &str = "operationName";

/// Which of the two names `key` is; an error for another case of one (`Query`,
/// `OPERATIONNAME`), which a case-insensitive reader (Json.NET's default, ASP.NET's query
/// string) would take as that name, perhaps over the one lb read.
fn known(key: &str) -> Result<Option<&'static str>, String> {
    for name in [QUERY, OPERATION_NAME] {
        if key == name {
            return Ok(Some(name));
        }
        if key.eq_ignore_ascii_case(name) {
            return Err(format!("`{key}` could be read as `{name}`"));
        }
    }
    Ok(None)
}

/// The GraphQL request `c` carries.
pub fn extract(c: Carrier<'_>) -> Result<GraphqlRequest, Refusal> {
    match c {
        Carrier::Get { query } => {
            let (q, name) = params(query.unwrap_or(""))?;
            let query = q.ok_or(Refusal::Malformed(
                "a GET request needs a `query` parameter".into(),
            ))?;
            Ok(GraphqlRequest {
                query,
                operation_name: name,
            })
        }
        Carrier::Post {
            query,
            content_type,
            content_encoding,
            body,
        } => {
            post_head(query, content_type, content_encoding)?;
            if body.len() > MAX_BODY {
                return Err(Refusal::TooLarge);
            }
            if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
                return Err(Refusal::Malformed(
                    "batched requests are not accepted".into(),
                ));
            }
            let b: Body = serde_json::from_slice(body)
                .map_err(|e| Refusal::Malformed(format!("the JSON body: {e}")))?;
            Ok(GraphqlRequest {
                query: b.query.ok_or(Refusal::Malformed(
                    "the JSON body needs a string `query`".into(),
                ))?,
                operation_name: b.operation_name,
            })
        }
    }
}

/// What a POST's head must be for lb to read its body as a GraphQL request: no query in
/// its URL, a JSON body that is not encoded. Checked before the body is read.
pub fn post_head(
    query: Option<&str>,
    content_type: Option<&[u8]>,
    content_encoding: Option<&[u8]>,
) -> Result<(), Refusal> {
    if let (Some(_), _) | (_, Some(_)) = params(query.unwrap_or(""))? {
        return Err(Refusal::Malformed(
            "a POST request carries its query in the body, not the URL".into(),
        ));
    }
    if content_encoding.is_some_and(|e| !e.eq_ignore_ascii_case(b"identity")) {
        return Err(Refusal::Unsupported(
            "an encoded request body (Content-Encoding)".into(),
        ));
    }
    if !is_json(content_type) {
        return Err(Refusal::Unsupported(
            "a body that is not application/json".into(),
        ));
    }
    Ok(())
}

/// `query` and `operationName` of a query string, each at most once.
type Params = (Option<String>, Option<String>);

fn params(qs: &str) -> Result<Params, Refusal> {
    // Rack before 3 (so Rails) and older Python split on `;` as on `&`: such a server could
    // read a `query` inside what lb reads as one value. Clients encode `;` (`%3B`).
    if qs.contains(';') {
        return Err(Refusal::Malformed(
            "a `;` in the query string, which some servers read as `&`".into(),
        ));
    }
    let (mut query, mut name) = (None, None);
    for (k, v) in form_urlencoded::parse(qs.as_bytes()) {
        let slot = match known(&k).map_err(Refusal::Malformed)? {
            Some(QUERY) => &mut query,
            Some(_) => &mut name,
            None => continue,
        };
        if slot.replace(v.into_owned()).is_some() {
            return Err(Refusal::Malformed(format!(
                "the `{k}` parameter is repeated"
            )));
        }
    }
    // An empty `operationName` is how some clients say "none".
    Ok((query, name.filter(|n| !n.is_empty())))
}

/// Whether a query string names a GraphQL query or operation.
pub fn names_operation(qs: Option<&str>) -> bool {
    !matches!(params(qs.unwrap_or("")), Ok((None, None)))
}

/// `application/json`, with or without parameters (`; charset=utf-8`).
fn is_json(content_type: Option<&[u8]>) -> bool {
    let Some(ct) = content_type.and_then(|c| std::str::from_utf8(c).ok()) else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// What a client encodes, by GET or by POST, is what lb reads: the same text the
        /// backend will decode.
        #[test]
        fn both_carriers_round_trip(query in "\\PC{0,40}", name in proptest::option::of("[_A-Za-z][_0-9A-Za-z]{0,8}")) {
            let mut qs = form_urlencoded::Serializer::new(String::new());
            qs.append_pair("query", &query);
            if let Some(n) = &name {
                qs.append_pair("operationName", n);
            }
            let qs = qs.finish();
            let want = GraphqlRequest { query: query.clone(), operation_name: name.clone() };
            prop_assert_eq!(extract(Carrier::Get { query: Some(&qs) }), Ok(want.clone()));
            let body = serde_json::json!({ "query": query, "operationName": name }).to_string();
            prop_assert_eq!(post(&body), Ok(want));
        }
    }

    fn post(body: &str) -> Result<GraphqlRequest, Refusal> {
        extract(Carrier::Post {
            query: None,
            content_type: Some(b"application/json; charset=utf-8"),
            content_encoding: None,
            body: body.as_bytes(),
        })
    }

    #[test]
    fn get_reads_query_and_operation_name() {
        let r = extract(Carrier::Get {
            query: Some("query=query+Q%7Ba%7D&operationName=Q&variables=%7B%7D"),
        })
        .expect("ok");
        assert_eq!(r.query, "query Q{a}");
        assert_eq!(r.operation_name.as_deref(), Some("Q"));
        assert!(matches!(
            extract(Carrier::Get { query: None }),
            Err(Refusal::Malformed(_))
        ));
        assert!(matches!(
            extract(Carrier::Get { query: Some("query={a}&query={b}") }),
            Err(Refusal::Malformed(m)) if m.contains("repeated")
        ));
        for bad in [
            "query={a}%20%23;query=mutation{b}",
            "query={a}&QUERY=mutation{b}",
        ] {
            let got = extract(Carrier::Get { query: Some(bad) });
            assert!(matches!(got, Err(Refusal::Malformed(_))), "{bad}: {got:?}");
        }
        let encoded = extract(Carrier::Get {
            query: Some("query=%7Ba(s%3A%22%3B%22)%7D"),
        });
        assert_eq!(encoded.map(|r| r.query).as_deref(), Ok("{a(s:\";\")}"));
    }

    #[test]
    fn post_reads_json_and_refuses_ambiguity() {
        let r = post(r#"{"query":"{a}","operationName":null,"variables":{"x":1}}"#).expect("ok");
        assert_eq!((r.query.as_str(), r.operation_name), ("{a}", None));
        let escaped = post(r#"{"\u0071uery":"mutation{a}"}"#).expect("escapes decoded");
        assert_eq!(escaped.query, "mutation{a}");
        for bad in [
            r#"{"query":"{a}","query":"mutation{b}"}"#,
            r#"{"query":"{a}","\u0071uery":"mutation{b}"}"#,
            r#"{"query":"{a}","Query":"mutation{b}"}"#,
            r#"{"QUERY":"mutation{b}","query":"{a}"}"#,
            r#"{"query":"{a}","operationname":"B"}"#,
            r#"[{"query":"{a}"}]"#,
            r#"{"query":1}"#,
            r#"{"operationName":"A"}"#,
            "not json",
        ] {
            assert!(matches!(post(bad), Err(Refusal::Malformed(_))), "{bad}");
        }
    }

    #[test]
    fn post_needs_plain_json_and_no_url_query() {
        let body = br#"{"query":"{a}"}"#;
        let with = |ct: Option<&'static [u8]>, ce: Option<&'static [u8]>, q| {
            extract(Carrier::Post {
                query: q,
                content_type: ct,
                content_encoding: ce,
                body,
            })
        };
        assert!(matches!(
            with(Some(b"application/graphql"), None, None),
            Err(Refusal::Unsupported(_))
        ));
        assert!(matches!(
            with(None, None, None),
            Err(Refusal::Unsupported(_))
        ));
        assert!(matches!(
            with(Some(b"application/json"), Some(b"gzip"), None),
            Err(Refusal::Unsupported(_))
        ));
        assert!(matches!(
            with(Some(b"application/json"), None, Some("query=mutation{x}")),
            Err(Refusal::Malformed(_))
        ));
        assert!(with(Some(b"Application/JSON"), Some(b"identity"), Some("x=1")).is_ok());
    }
}
