//! GraphQL-aware routes (`graphql = {..}` on a route): each request is read as a GraphQL
//! request ([`request`]), its document parsed and its operation picked ([`select`]), the
//! operation measured against the route's limits ([`limits`]), and refusals answered as
//! GraphQL errors ([`gate`]). The operation's type and name also route the request
//! (`match.graphql_operation`) and key rate limits (`graphql:operation`). Pure but for the
//! refusal counter in [`gate`].
//!
//! Parsing happens once, before routing; measuring happens after, against the chosen
//! route's limits, so a walk stops as soon as the document is over them.

pub mod gate;
pub mod limits;
pub mod request;
pub mod select;

pub use async_graphql_parser::types::OperationType;
use lb_core::config::{GraphqlLimits, GraphqlOperation};

/// Why lb refuses a GraphQL request. Each is answered with a GraphQL error body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("malformed GraphQL request: {0}")]
    Malformed(String),
    #[error("{0} is not accepted; send application/json")]
    Unsupported(String),
    #[error("the GraphQL request body is over {} bytes", request::MAX_BODY)]
    TooLarge,
    #[error("the GraphQL document is over {} bytes", select::MAX_DOCUMENT)]
    DocumentTooLarge,
    #[error("GraphQL requests are GET or POST")]
    Method,
    #[error("the operation is nested {found} deep, over the {max} allowed")]
    Depth { found: u32, max: u32 },
    #[error("the operation has more than the {max} aliases allowed")]
    Aliases { max: u32 },
    #[error("the operation selects more than the {max} fields allowed")]
    Complexity { max: u32 },
    #[error("introspection is disabled")]
    Introspection,
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Self::Unsupported(_) => 415,
            Self::TooLarge | Self::DocumentTooLarge => 413,
            Self::Method => 405,
            _ => 400,
        }
    }

    /// `extensions.code` of the error, and the `reason` label of
    /// `lb_graphql_refused_total`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "GRAPHQL_PARSE_FAILED",
            Self::Unsupported(_) => "UNSUPPORTED_MEDIA_TYPE",
            Self::TooLarge => "REQUEST_TOO_LARGE",
            Self::DocumentTooLarge => "DOCUMENT_TOO_LARGE",
            Self::Method => "METHOD_NOT_ALLOWED",
            Self::Depth { .. } => "MAX_DEPTH_EXCEEDED",
            Self::Aliases { .. } => "MAX_ALIASES_EXCEEDED",
            Self::Complexity { .. } => "MAX_COMPLEXITY_EXCEEDED",
            Self::Introspection => "INTROSPECTION_DISABLED",
        }
    }
}

/// A parsed GraphQL request: its document and the operation it runs.
#[derive(Debug)]
pub struct Parsed {
    doc: async_graphql_parser::types::ExecutableDocument,
    pub kind: OperationType,
    /// The operation's name; `None` for an anonymous one.
    pub name: Option<String>,
}

impl Parsed {
    /// Parses `req`'s document and picks the operation it names.
    pub fn parse(req: &request::GraphqlRequest) -> Result<Self, Refusal> {
        if req.query.len() > select::MAX_DOCUMENT {
            return Err(Refusal::DocumentTooLarge);
        }
        select::nesting(&req.query)?;
        let doc = async_graphql_parser::parse_query(&req.query)
            .map_err(|e| Refusal::Malformed(e.to_string()))?;
        let (kind, name) = select::operation(&doc, req.operation_name.as_deref())?;
        Ok(Self { doc, kind, name })
    }

    /// Whether the operation is what a route's `match.graphql_operation` asks for.
    pub fn matches(&self, want: &GraphqlOperation) -> bool {
        match want {
            GraphqlOperation::Query => self.kind == OperationType::Query,
            GraphqlOperation::Mutation => self.kind == OperationType::Mutation,
            GraphqlOperation::Subscription => self.kind == OperationType::Subscription,
            GraphqlOperation::Named(n) => self.name.as_deref() == Some(n.as_str()),
        }
    }

    /// The `graphql:operation` rate-limit key: `query:Name`, `mutation:` (anonymous).
    pub fn key(&self) -> String {
        format!("{}:{}", self.kind, self.name.as_deref().unwrap_or(""))
    }

    /// Holds the operation to a route's limits.
    pub fn check(&self, limits: &GraphqlLimits) -> Result<(), Refusal> {
        let op = select::find(&self.doc, self.name.as_deref())
            .ok_or_else(|| Refusal::Malformed("the operation went missing".into()))?;
        limits::check(&self.doc, op, limits)
    }
}

/// Parses and checks in one go (benches, fuzzing): what a route with `limits` does to `c`.
pub fn inspect(c: request::Carrier<'_>, limits: &GraphqlLimits) -> Result<Parsed, Refusal> {
    let p = Parsed::parse(&request::extract(c)?)?;
    p.check(limits)?;
    Ok(p)
}

#[cfg(test)]
mod prop {
    use super::request::Carrier;
    use super::*;
    use proptest::prelude::*;

    const L: GraphqlLimits = GraphqlLimits {
        max_depth: 6,
        max_aliases: 4,
        max_complexity: 30,
        introspection: false,
    };

    proptest! {
        /// Whatever a client sends, lb answers without panicking, with a 4xx when it refuses.
        #[test]
        fn any_bytes_get_an_answer(body in proptest::collection::vec(any::<u8>(), 0..400)) {
            let c = Carrier::Post { query: None, content_type: Some(b"application/json"), content_encoding: None, body: &body };
            if let Err(r) = inspect(c, &L) {
                prop_assert!((400..500).contains(&r.status()));
            }
        }

        /// Documents made of GraphQL's own pieces parse or refuse, never panic.
        #[test]
        fn graphql_shaped_text_gets_an_answer(parts in proptest::collection::vec(
            prop_oneof![
                Just("{"), Just("}"), Just("a"), Just("x: a"), Just("...F"), Just("... on T"),
                Just("fragment F on T"), Just("query"), Just("mutation"), Just("__schema"),
                Just("(x: [1, {y: \"}\"}])"), Just("# {\n"), Just("\"\"\"{\"\"\""),
            ], 0..60)) {
            let q = parts.join(" ");
            let _ = inspect(Carrier::Get { query: Some(&format!("query={q}")) }, &L);
        }

        /// Depth passes exactly up to the limit, through fields and fragments alike.
        #[test]
        fn depth_boundary(d in 1u32..12, through_fragment in any::<bool>()) {
            let inner = format!("{}x{}", "f { ".repeat(d as usize - 1), " }".repeat(d as usize - 1));
            let doc = if through_fragment {
                format!("{{ ...F }} fragment F on T {{ {inner} }}")
            } else {
                format!("{{ {inner} }}")
            };
            let req = request::GraphqlRequest { query: doc, operation_name: None };
            let got = Parsed::parse(&req).and_then(|p| p.check(&L));
            if d <= L.max_depth {
                prop_assert_eq!(got, Ok(()));
            } else {
                prop_assert_eq!(got, Err(Refusal::Depth { found: L.max_depth + 1, max: L.max_depth }));
            }
        }
    }
}
