//! Which operation of a document runs: the one `operationName` names, or the only one.
//! Also the nesting bound checked before the parser runs. Pure.

use async_graphql_parser::types::{DocumentOperations, ExecutableDocument, OperationDefinition};
use async_graphql_parser::Positioned;

use super::{OperationType, Refusal};

/// The deepest bracket nesting (`{`, `[`, `(`) lb hands to the parser, which descends
/// recursively: far over any limit a route can set (50), far under what could exhaust a
/// stack.
pub const MAX_NESTING: usize = 128;

/// The longest document lb parses (128 KiB): the parser reads 6–10 MiB/s
/// (`cargo bench -p lb-l7 --bench graphql`), so this bounds one request's parse to ~20 ms of
/// CPU, while leaving room for twice a large generated document (~60 KiB).
pub const MAX_DOCUMENT: usize = 128 << 10;

/// Refuses a document nested deeper than [`MAX_NESTING`], counted over its brackets outside
/// strings and comments, before the recursive parser sees it.
pub fn nesting(doc: &str) -> Result<(), Refusal> {
    let b = doc.as_bytes();
    let (mut depth, mut i) = (0usize, 0usize);
    while i < b.len() {
        match b[i] {
            b'#' => {
                while i < b.len() && b[i] != b'\n' && b[i] != b'\r' {
                    i += 1;
                }
            }
            b'"' if b[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < b.len() && !b[i..].starts_with(b"\"\"\"") {
                    // `\"""` is an escaped delimiter inside a block string.
                    i += if b[i..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' && b[i] != b'\n' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' | b'[' | b'(' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(Refusal::Malformed(format!(
                        "the document is nested more than {MAX_NESTING} deep"
                    )));
                }
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// The type and name of the operation `name` picks (or the only one, without a name).
pub fn operation(
    doc: &ExecutableDocument,
    name: Option<&str>,
) -> Result<(OperationType, Option<String>), Refusal> {
    let op = find(doc, name).ok_or_else(|| {
        Refusal::Malformed(match (name, &doc.operations) {
            (Some(n), _) => format!("the document has no operation named \"{n}\""),
            (None, _) => "the document has several operations; name one in operationName".into(),
        })
    })?;
    let name = match &doc.operations {
        DocumentOperations::Single(_) => None,
        DocumentOperations::Multiple(_) => name.map(str::to_string).or_else(|| {
            doc.operations
                .iter()
                .next()
                .and_then(|(n, _)| n.map(|n| n.to_string()))
        }),
    };
    Ok((op.node.ty, name))
}

/// The operation `name` picks: the named one; without a name, the only one. An anonymous
/// operation has no name to pick it by, so a name given for it finds nothing.
pub fn find<'d>(
    doc: &'d ExecutableDocument,
    name: Option<&str>,
) -> Option<&'d Positioned<OperationDefinition>> {
    match (&doc.operations, name) {
        (DocumentOperations::Single(op), None) => Some(op),
        (DocumentOperations::Single(_), Some(_)) => None,
        (DocumentOperations::Multiple(ops), Some(n)) => ops.get(n),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next(),
        (DocumentOperations::Multiple(_), None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(doc: &str, name: Option<&str>) -> Result<(OperationType, Option<String>), Refusal> {
        let d = async_graphql_parser::parse_query(doc).expect("parses");
        operation(&d, name)
    }

    #[test]
    fn picks_the_named_or_the_only_operation() {
        assert_eq!(pick("{a}", None), Ok((OperationType::Query, None)));
        assert_eq!(
            pick("mutation M {a}", None),
            Ok((OperationType::Mutation, Some("M".into())))
        );
        let two = "query Q {a} mutation M {b}";
        assert_eq!(
            pick(two, Some("M")),
            Ok((OperationType::Mutation, Some("M".into())))
        );
        assert!(pick(two, None).is_err(), "ambiguous");
        assert!(pick(two, Some("X")).is_err(), "unknown");
        assert!(
            pick("{a}", Some("Q")).is_err(),
            "a name for an anonymous operation"
        );
        assert!(async_graphql_parser::parse_query("{a} mutation M {b}").is_err());
        assert!(async_graphql_parser::parse_query("query Q {a} mutation Q {b}").is_err());
    }

    #[test]
    fn nesting_ignores_strings_and_comments() {
        let deep = "{".repeat(MAX_NESTING + 1);
        assert!(nesting(&deep).is_err());
        assert!(nesting(&"{".repeat(MAX_NESTING)).is_ok());
        let hidden = format!("{{a(s: \"{deep}\") # {deep}\n b(t: \"\"\"{deep}\\\"\"\"\"\"\")}}");
        assert!(nesting(&hidden).is_ok());
    }
}
