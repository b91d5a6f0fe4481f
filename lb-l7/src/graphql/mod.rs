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
            Self::TooLarge => 413,
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
