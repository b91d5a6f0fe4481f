//! Checks of a route's `grpc_transcode`: its keys, and what the route around it must be (an
//! HTTP/2 pool, no path rewrite, no policy that works on a proxied body). What the
//! descriptor set holds is checked by lb-l7 when it reads the file. Pure; no I/O.

use super::super::diag::Diagnostic;
use super::super::model::*;
use super::super::raw::RawRoute;
use super::Ctx;

/// The route's `grpc_transcode`, if it has a valid one.
pub(super) fn route(cx: &mut Ctx<'_>, r: &RawRoute, key: &str) -> Option<GrpcTranscode> {
    let t = r.grpc_transcode.as_ref()?;
    let route_key = key;
    let key = format!("{key}.grpc_transcode");
    let raw = t.get_ref();
    let mut ok = true;
    let file = raw.descriptor_set.get_ref();
    if file.is_empty() {
        cx.err(
            raw.descriptor_set.span(),
            format!("{key}.descriptor_set"),
            "descriptor_set must name a file (a FileDescriptorSet, e.g. from protoc --include_imports --descriptor_set_out)",
        );
        ok = false;
    }
    let mut services: Vec<String> = Vec::new();
    if raw.services.get_ref().is_empty() {
        cx.err(
            raw.services.span(),
            format!("{key}.services"),
            "services must name at least one gRPC service, e.g. [\"pkg.Service\"]",
        );
        ok = false;
    }
    for (i, s) in raw.services.get_ref().iter().enumerate() {
        let name = s.get_ref();
        let valid = !name.is_empty()
            && name.split('.').all(|p| {
                p.bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                    && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            });
        if !valid {
            cx.err(
                s.span(),
                format!("{key}.services[{i}]"),
                format!("\"{name}\" is not a fully-qualified service name such as \"pkg.Service\""),
            );
            ok = false;
        } else if services.contains(name) {
            cx.err(
                s.span(),
                format!("{key}.services[{i}]"),
                format!("service \"{name}\" is listed twice"),
            );
            ok = false;
        }
        services.push(name.clone());
    }
    // The gRPC path is the method's: nothing of the client's path is forwarded.
    let conflicts = [
        ("rewrite", r.rewrite.as_ref().map(|v| v.span())),
        ("strip_prefix", r.strip_prefix.as_ref().map(|v| v.span())),
        ("upgrades", r.upgrades.as_ref().map(|v| v.span())),
        // The request is JSON for one method, not a GraphQL document; the route calls its
        // own pool, not aggregate parts.
        ("graphql", r.graphql.as_ref().map(|v| v.span())),
        ("aggregate", r.aggregate.as_ref().map(|v| v.span())),
    ];
    for (name, span) in conflicts {
        if let Some(span) = span {
            cx.push(
                Diagnostic::error(format!(
                    "`{name}` does nothing on a grpc_transcode route: lb calls the method its HTTP rule names"
                ))
                .at(span)
                .key(format!("{route_key}.{name}"))
                .help(format!("remove `{name}`, or move grpc_transcode to a route of its own")),
            );
            ok = false;
        }
    }
    ok.then(|| GrpcTranscode {
        descriptor_set: super::file_ref(&raw.descriptor_set, format!("{key}.descriptor_set")),
        services,
        services_span: raw.services.span(),
    })
}

/// Checks of transcoding routes against their pool and policies: the pool speaks HTTP/2
/// (gRPC runs on nothing else), and no policy of the route needs a proxied body (a cache
/// keys and stores backend answers; a transform reads them).
pub(super) fn uses(
    cx: &mut Ctx<'_>,
    raw_routes: &[(RawRoute, std::ops::Range<usize>)],
    policies: &[Policy],
    pools: &[Option<Pool>],
    routes: &[HttpRoute],
) {
    // Spans come from the raw routes, which line up only when every route was valid.
    if routes.len() != raw_routes.len() {
        return;
    }
    for (r, (rr, _)) in routes.iter().zip(raw_routes) {
        let (Some(_), Some(span)) = (
            &r.grpc_transcode,
            rr.grpc_transcode.as_ref().map(|t| t.span()),
        ) else {
            continue;
        };
        if let Some(Some(pool)) = r.pool.and_then(|p| pools.get(p)) {
            if !pool.http2 {
                cx.push(
                    Diagnostic::error(format!(
                        "route \"{}\" transcodes to gRPC, but pool \"{}\" speaks HTTP/1.1",
                        r.name, pool.name
                    ))
                    .at(span.clone())
                    .key(format!("route \"{}\".grpc_transcode", r.name))
                    .help(format!(
                        "gRPC needs HTTP/2: set http2 = true on pool \"{}\"",
                        pool.name
                    )),
                );
            }
        }
        for &i in &r.policies {
            let p = &policies[i];
            if matches!(
                p.kind,
                PolicyKind::Cache { .. } | PolicyKind::Transform { .. }
            ) {
                cx.push(
                    Diagnostic::error(format!(
                        "policy \"{}\" ({}) works on a proxied body; route \"{}\" answers by transcoding gRPC",
                        p.name,
                        p.kind.name(),
                        r.name
                    ))
                    .at(span.clone())
                    .key(format!("route \"{}\".policies", r.name))
                    .help("remove it from this route's policies"),
                );
            }
        }
    }
}
