//! Measures an operation against a route's limits: selection depth, aliases, fields
//! selected (complexity) and introspection, with fragments expanded where they are spread.
//! The walk stops at the first limit passed, so its cost is bounded by the limits, not by
//! what a client sent. Pure.

use async_graphql_parser::types::{
    ExecutableDocument, OperationDefinition, Selection, SelectionSet,
};
use async_graphql_parser::Positioned;
use lb_core::config::GraphqlLimits;

use super::Refusal;

/// Fragments spread inside fragments, deepest: the walk recurses per spread, and a chain
/// of fragments that select nothing themselves adds no depth to stop it.
pub const MAX_SPREAD_NESTING: usize = 64;

/// Selections visited per field allowed (plus a floor): spreads and inline fragments cost
/// a visit without selecting a field, and a document made of them alone must still end.
const WORK_PER_FIELD: u32 = 4;
const WORK_FLOOR: u32 = 1024;

/// Holds `op` of `doc` to `limits`.
pub fn check(
    doc: &ExecutableDocument,
    op: &Positioned<OperationDefinition>,
    limits: &GraphqlLimits,
) -> Result<(), Refusal> {
    let mut w = Walk {
        doc,
        limits,
        fields: 0,
        aliases: 0,
        work: 0,
        work_cap: limits
            .max_complexity
            .saturating_mul(WORK_PER_FIELD)
            .saturating_add(WORK_FLOOR),
        spreads: Vec::new(),
    };
    w.set(&op.node.selection_set.node, 0)
}

/// What one walk has counted so far.
struct Walk<'d> {
    doc: &'d ExecutableDocument,
    limits: &'d GraphqlLimits,
    fields: u32,
    aliases: u32,
    work: u32,
    work_cap: u32,
    /// The fragments being expanded, outermost first (a spread of one of them is a cycle).
    spreads: Vec<&'d str>,
}

impl<'d> Walk<'d> {
    /// Walks `set`, whose fields sit at `depth + 1`.
    fn set(&mut self, set: &'d SelectionSet, depth: u32) -> Result<(), Refusal> {
        let l = self.limits;
        for item in &set.items {
            self.work += 1;
            if self.work > self.work_cap {
                return Err(Refusal::Complexity {
                    max: l.max_complexity,
                });
            }
            match &item.node {
                Selection::Field(f) => {
                    let depth = depth + 1;
                    if depth > l.max_depth {
                        return Err(Refusal::Depth {
                            found: depth,
                            max: l.max_depth,
                        });
                    }
                    self.fields += 1;
                    if self.fields > l.max_complexity {
                        return Err(Refusal::Complexity {
                            max: l.max_complexity,
                        });
                    }
                    if f.node.alias.is_some() {
                        self.aliases += 1;
                        if self.aliases > l.max_aliases {
                            return Err(Refusal::Aliases { max: l.max_aliases });
                        }
                    }
                    let name = f.node.name.node.as_str();
                    if !l.introspection && (name == "__schema" || name == "__type") {
                        return Err(Refusal::Introspection);
                    }
                    self.set(&f.node.selection_set.node, depth)?;
                }
                Selection::InlineFragment(i) => self.set(&i.node.selection_set.node, depth)?,
                Selection::FragmentSpread(s) => {
                    let name = s.node.fragment_name.node.as_str();
                    if self.spreads.contains(&name) {
                        return Err(Refusal::Malformed(format!(
                            "fragment \"{name}\" spreads itself"
                        )));
                    }
                    if self.spreads.len() >= MAX_SPREAD_NESTING {
                        return Err(Refusal::Malformed(format!(
                            "fragments are spread more than {MAX_SPREAD_NESTING} deep"
                        )));
                    }
                    let frag = self.doc.fragments.get(name).ok_or_else(|| {
                        Refusal::Malformed(format!("unknown fragment \"{name}\""))
                    })?;
                    self.spreads.push(name);
                    self.set(&frag.node.selection_set.node, depth)?;
                    self.spreads.pop();
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: GraphqlLimits = GraphqlLimits {
        max_depth: 3,
        max_aliases: 2,
        max_complexity: 6,
        introspection: false,
    };

    fn run(doc: &str) -> Result<(), Refusal> {
        let d = async_graphql_parser::parse_query(doc).expect("parses");
        let op = super::super::select::find(&d, None).expect("one operation");
        check(&d, op, &L)
    }

    #[test]
    fn depth_at_and_past_the_limit() {
        assert_eq!(run("{a{b{c}}}"), Ok(()));
        assert_eq!(
            run("{a{b{c{d}}}}"),
            Err(Refusal::Depth { found: 4, max: 3 })
        );
        // A fragment's fields count at the depth where it is spread.
        assert_eq!(
            run("{a{...F}} fragment F on T {b{c{d}}}"),
            Err(Refusal::Depth { found: 4, max: 3 })
        );
        assert_eq!(run("{a{... on T {b{c}}}}"), Ok(()));
    }

    #[test]
    fn aliases_and_complexity_at_and_past_the_limit() {
        assert_eq!(run("{x:a y:a}"), Ok(()));
        assert_eq!(run("{x:a y:a z:a}"), Err(Refusal::Aliases { max: 2 }));
        assert_eq!(run("{a b c d e f}"), Ok(()));
        assert_eq!(run("{a b c d e f g}"), Err(Refusal::Complexity { max: 6 }));
        // Counted where spread: twice three fields, then one more.
        assert_eq!(run("{...F ...F} fragment F on T {a b c}"), Ok(()));
        assert_eq!(
            run("{...F ...F z} fragment F on T {a b c}"),
            Err(Refusal::Complexity { max: 6 })
        );
    }

    #[test]
    fn introspection_found_anywhere() {
        assert_eq!(run("{__typename a}"), Ok(()));
        assert_eq!(run("{__schema{types}}"), Err(Refusal::Introspection));
        assert_eq!(
            run("{a{...F}} fragment F on T {__type}"),
            Err(Refusal::Introspection)
        );
        assert_eq!(run("{... on Q {__schema{x}}}"), Err(Refusal::Introspection));
    }

    #[test]
    fn cycles_unknown_fragments_and_bombs_end() {
        assert!(
            matches!(run("{...A} fragment A on T {...B} fragment B on T {...A}"), Err(Refusal::Malformed(m)) if m.contains("spreads itself"))
        );
        assert!(matches!(run("{...Nope}"), Err(Refusal::Malformed(_))));
        // Each fragment spreads the next twice: 2^20 spreads if walked whole.
        let mut doc = String::from("{...F0}");
        for i in 0..20 {
            doc += &format!(" fragment F{i} on T {{...F{n} ...F{n}}}", n = i + 1);
        }
        doc += " fragment F20 on T {__typename}";
        assert_eq!(run(&doc), Err(Refusal::Complexity { max: 6 }));
        // A chain of fragments deeper than the walk recurses.
        let mut chain = String::from("{...F0}");
        for i in 0..100 {
            chain += &format!(" fragment F{i} on T {{...F{}}}", i + 1);
        }
        chain += " fragment F100 on T {a}";
        assert!(matches!(run(&chain), Err(Refusal::Malformed(m)) if m.contains("deep")));
    }
}
