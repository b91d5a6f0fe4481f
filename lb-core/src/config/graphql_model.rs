//! The typed model of a route's GraphQL settings (`graphql = {..}` and
//! `match.graphql_operation`). Pure; no I/O.

/// A route's `graphql = { max_depth, max_aliases, max_complexity, introspection }`: what one
/// operation may ask for before lb refuses it with a GraphQL error (400), unseen by the
/// backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraphqlLimits {
    /// Deepest selection-set nesting, fragments expanded; default 10.
    pub max_depth: u32,
    /// Aliased fields in the operation, fragments counted where spread; default 30.
    pub max_aliases: u32,
    /// Fields selected in the operation, fragments counted where spread; default 1000.
    pub max_complexity: u32,
    /// Whether `__schema` / `__type` may be asked for; default false (`__typename` always may).
    pub introspection: bool,
}

impl GraphqlLimits {
    pub const DEFAULT: Self = Self {
        max_depth: 10,
        max_aliases: 30,
        max_complexity: 1000,
        introspection: false,
    };
    /// The async-graphql parser refuses selection sets nested past 64; a limit has to stay
    /// under that to mean anything.
    pub const MAX_DEPTH: u32 = 50;
    pub const MAX_ALIASES: u32 = 10_000;
    pub const MAX_COMPLEXITY: u32 = 1_000_000;
}

/// `match.graphql_operation`: an operation type, or an operation's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraphqlOperation {
    Query,
    Mutation,
    Subscription,
    /// The operation's name, exactly (`query GetUser { .. }` is `"GetUser"`).
    Named(String),
}

impl GraphqlOperation {
    /// `"query"`, `"mutation"`, `"subscription"`, or a GraphQL name; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "query" => Self::Query,
            "mutation" => Self::Mutation,
            "subscription" => Self::Subscription,
            name if is_name(name) => Self::Named(name.to_string()),
            _ => return None,
        })
    }
}

impl std::fmt::Display for GraphqlOperation {
    /// The config spelling: `query`, `mutation`, `subscription`, or the name.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Query => "query",
            Self::Mutation => "mutation",
            Self::Subscription => "subscription",
            Self::Named(n) => n,
        })
    }
}

/// A GraphQL `Name`: `[_A-Za-z][_0-9A-Za-z]*`.
pub fn is_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c == b'_' || c.is_ascii_alphabetic())
        && b.all(|c| c == b'_' || c.is_ascii_alphanumeric())
}
