//! The short plan `lb check` prints: listeners → pools → backends, algorithms, health.

use std::fmt::Write;

use lb_core::config::{format_duration as d, Loaded, Protocol};

pub fn plan(l: &Loaded) -> String {
    let c = &l.config;
    let mut out = String::new();
    let g = &c.global;
    let workers = if g.workers == 0 {
        "auto (one per core)".to_string()
    } else {
        g.workers.to_string()
    };
    let _ = writeln!(out, "{}: OK ({})", l.source.name, l.hash);
    let _ = writeln!(
        out,
        "global: workers {workers}, max_connections {}, shutdown_delay {}, shutdown_timeout {}, relay {}",
        g.max_connections,
        d(g.shutdown_delay),
        d(g.shutdown_timeout),
        if g.splice { "splice" } else { "copy" }
    );
    if let Some(a) = &c.admin {
        let _ = writeln!(
            out,
            "admin: http://{} ({}; Host {}; at most {} connections)",
            a.bind,
            if a.token.is_some() {
                "token required for POST"
            } else {
                "no token"
            },
            if !a.checks_host() {
                "any with the token, else an IP literal or localhost".to_string()
            } else if a.hosts.is_empty() {
                "an IP literal or localhost".to_string()
            } else {
                format!("an IP literal, localhost or {}", a.hosts.join(", "))
            },
            a.max_connections
        );
    }
    if let Some(t) = &c.tracing {
        let export = match &t.otlp_endpoint {
            Some(e) if e.host.contains(':') => {
                format!("spans to http://[{}]:{}{}", e.host, e.port, e.path)
            }
            Some(e) => format!("spans to http://{}:{}{}", e.host, e.port, e.path),
            None => "no export".to_string(),
        };
        let _ = writeln!(
            out,
            "tracing: W3C traceparent of lb's own on http listeners; {export} (service.name \"{}\")",
            t.service_name
        );
    }
    for (index, li) in c.listeners.iter().enumerate() {
        let pool = li
            .pool
            .map_or("none: unrouted requests get 404".to_string(), |p| {
                format!("\"{}\"", c.pools[p].name)
            });
        let timeouts = match li.protocol {
            Protocol::Http => format!(
                "connect_timeout {}, idle_timeout {}, header_timeout {}, max_connections {}{}",
                d(li.connect_timeout),
                d(li.idle_timeout),
                d(li.http.header_timeout),
                li.max_connections,
                li.http
                    .max_body_size
                    .map_or(String::new(), |m| format!(", max_body_size {m} bytes"))
            ),
            Protocol::Tcp => format!(
                "connect_timeout {}, idle_timeout {}, max_connections {}",
                d(li.connect_timeout),
                d(li.idle_timeout),
                li.max_connections
            ),
            Protocol::Udp => format!(
                "udp_session_timeout {}, max flows {}",
                d(li.udp_session_timeout),
                li.max_connections
            ),
        };
        let _ = writeln!(
            out,
            "listener \"{}\" {} {} → pool {pool} ({timeouts}{})",
            li.name,
            li.bind,
            li.protocol.name(),
            if li.access_log { ", access log" } else { "" }
        );
        if let Some(m) = &li.max_age {
            let jitter = if m.jitter > 0.0 {
                format!(" ± {}%", (m.jitter * 100.0).round())
            } else {
                String::new()
            };
            let how = match li.protocol {
                Protocol::Http => {
                    "then the next HTTP/1 answer says Connection: close, HTTP/2 gets a GOAWAY"
                        .to_string()
                }
                _ => format!(
                    "closed at the first {} without a byte either way",
                    d(m.grace)
                ),
            };
            let _ = writeln!(out, "  connections older than {}{jitter}: {how}", d(m.age));
        }
        if li.accept_proxy_protocol {
            match &li.trusted_proxies {
                Some(t) => {
                    let nets: Vec<String> = t
                        .iter()
                        .map(|c| format!("{}/{}", c.addr, c.prefix))
                        .collect();
                    let _ = writeln!(
                        out,
                        "  expects a PROXY v1/v2 header, only from {}",
                        nets.join(", ")
                    );
                }
                None => {
                    let _ = writeln!(out, "  expects a PROXY v1/v2 header from any client");
                }
            }
        }
        if let Some(t) = &li.tls {
            let names: Vec<&str> = t
                .sni
                .iter()
                .filter_map(|c| c.server_name.as_deref())
                .collect();
            let _ = writeln!(
                out,
                "  terminates TLS 1.2/1.3 with {}{}{}{}",
                t.default.cert.path,
                if names.is_empty() {
                    String::new()
                } else {
                    format!(", per SNI: {}", names.join(", "))
                },
                if t.alpn.is_empty() {
                    String::new()
                } else {
                    format!(", ALPN {}", t.alpn.join(", "))
                },
                t.client_ca.as_ref().map_or(String::new(), |ca| format!(
                    ", client certificates from {}",
                    ca.path
                )),
            );
        }
        for r in &li.sni_routes {
            let how = if li.tls.is_some() {
                "after the handshake"
            } else {
                "from the ClientHello, not decrypted"
            };
            let _ = writeln!(
                out,
                "  SNI {} → pool \"{}\" ({how})",
                r.pattern, c.pools[r.pool].name
            );
        }
        if let Some(v) = li.proxy_protocol {
            let _ = writeln!(out, "  sends a PROXY {v:?} header to backends");
        }
        for r in c.routes.iter().filter(|r| r.listener == index) {
            let mut cond = Vec::new();
            if let Some(h) = &r.host {
                cond.push(format!("host {h}"));
            }
            if let Some(p) = &r.path {
                cond.push(p.text());
            }
            if !r.methods.is_empty() {
                cond.push(r.methods.join("|"));
            }
            for (n, v) in &r.headers {
                cond.push(format!("{n}: {v}"));
            }
            if let Some(op) = &r.graphql_operation {
                cond.push(format!("graphql_operation = \"{op}\""));
            }
            if cond.is_empty() {
                cond.push("every request".into());
            }
            let mut how = vec![format!("timeout {}", d(r.timeout))];
            if r.strip_prefix {
                how.push("strip prefix".into());
            }
            if let Some(w) = &r.rewrite {
                how.push(format!("rewrite to {w}"));
            }
            if r.retries > 0 {
                how.push(format!("retries {}", r.retries));
            }
            if let Some(m) = r.max_body_size {
                how.push(format!("max_body_size {m} bytes"));
            }
            if let Some(g) = &r.graphql {
                how.push(format!(
                    "GraphQL depth ≤ {}, aliases ≤ {}, fields ≤ {}, introspection {}",
                    g.max_depth,
                    g.max_aliases,
                    g.max_complexity,
                    if g.introspection { "on" } else { "off" }
                ));
            }
            if let Some(t) = &r.grpc_transcode {
                how.push(format!(
                    "JSON transcoded to gRPC {} ({})",
                    t.services.join(", "),
                    t.descriptor_set.path
                ));
            }
            if !r.policies.is_empty() {
                let names: Vec<&str> = r
                    .policies
                    .iter()
                    .map(|&i| c.policies[i].name.as_str())
                    .collect();
                how.push(format!("policies {}", names.join(" → ")));
            }
            let to = match r.pool {
                Some(p) => format!("pool \"{}\"", c.pools[p].name),
                None => format!("aggregate of {} parts", r.aggregate.len()),
            };
            let _ = writeln!(
                out,
                "  route \"{}\": {} → {to} ({})",
                r.name,
                cond.join(", "),
                how.join(", ")
            );
            for p in &r.aggregate {
                let _ = writeln!(
                    out,
                    "    part \"{}\": GET {} on pool \"{}\", timeout {}{}",
                    p.name,
                    p.path.text,
                    c.pools[p.pool].name,
                    d(p.timeout),
                    if p.required { ", required" } else { "" }
                );
            }
        }
    }
    for p in &c.policies {
        let _ = writeln!(out, "policy \"{}\": {}", p.name, describe_policy(&p.kind));
    }
    for p in &c.pools {
        let _ = write!(out, "pool \"{}\": {}", p.name, p.algorithm.name());
        if p.algorithm == lb_core::config::Algorithm::ConsistentHash {
            let _ = write!(out, " on {}", p.hash_key.describe());
            if let Some(f) = p.hash_balance_factor {
                let _ = write!(out, ", bounded load ×{f}");
            }
        }
        match &p.health {
            Some(h) => {
                let what = h.kind.describe();
                let _ = write!(
                    out,
                    "; health {what} every {} (timeout {}, rise {}, fall {})",
                    d(h.interval),
                    d(h.timeout),
                    h.rise,
                    h.fall
                );
            }
            None => {
                let _ = write!(out, "; no active health check");
            }
        }
        if let Some(ps) = &p.passive {
            let _ = write!(
                out,
                "; passive: eject for {} after {} failed connects",
                d(ps.eject_for),
                ps.consecutive_failures
            );
        }
        if p.http2 {
            let _ = write!(out, "; HTTP/2 to backends");
        }
        if let Some(c) = &p.sticky_cookie {
            let _ = write!(out, "; sticky cookie {c}");
        }
        if let Some(s) = p.slow_start {
            let _ = write!(out, "; slow start {}", d(s));
        }
        if let Some(t) = &p.backend_tls {
            let name = t.server_name.as_deref().unwrap_or("each backend's IP");
            match (&t.ca, t.verify) {
                (Some(ca), true) => {
                    let _ = write!(
                        out,
                        "; TLS to backends as {name}, verified with {}",
                        ca.path
                    );
                }
                _ => {
                    let _ = write!(out, "; TLS to backends as {name}, NOT verified");
                }
            }
        }
        out.push('\n');
        for b in &p.backends {
            let _ = writeln!(
                out,
                "  - {} weight {}{}{}",
                b.addr,
                b.weight,
                priority(b.priority),
                zone(b.zone.as_deref())
            );
        }
        for n in &p.names {
            let _ = writeln!(
                out,
                "  - {} weight {}{}{} (resolved by DNS{})",
                n.label(),
                n.weight,
                priority(n.priority),
                zone(n.zone.as_deref()),
                resolver(p.resolver)
            );
        }
        levels(&mut out, p);
        if let Some(d) = &p.discovery {
            let every = d
                .interval
                .map_or("by TTL".to_string(), |i| format!("every {i:?}"));
            let _ = writeln!(
                out,
                "  - DNS SRV {} ({every}{})",
                d.name,
                resolver(d.resolver.or(p.resolver))
            );
        }
    }
    out
}

fn describe_policy(k: &lb_core::config::PolicyKind) -> String {
    use lb_core::config::{PolicyKind as K, RateKey};
    match k {
        K::IpFilter {
            allow,
            deny,
            trusted_proxies,
        } => format!(
            "ip_filter, {} allowed, {} denied network(s), {} trusted proxy network(s)",
            allow.len(),
            deny.len(),
            trusted_proxies.len()
        ),
        K::ApiKey {
            keys,
            keys_file,
            header,
            query,
        } => format!(
            "api_key, {} key(s){} in header {header}{}",
            keys.len(),
            keys_file
                .as_ref()
                .map_or(String::new(), |f| format!(" and those of {}", f.path)),
            query
                .as_ref()
                .map_or(String::new(), |q| format!(" or query parameter {q}"))
        ),
        K::RateLimit {
            requests,
            per,
            burst,
            key,
            store,
            ..
        } => {
            let store = match store {
                lb_core::config::RateStore::Local => "local".to_string(),
                lb_core::config::RateStore::Redis { url, on_error } => {
                    format!("shared in {url} (while it fails: {on_error:?})")
                }
            };
            let key = match key {
                RateKey::Ip => "client address".to_string(),
                RateKey::Header(h) => format!("header {h}"),
                RateKey::ApiKey => "API-key consumer".to_string(),
                RateKey::Jwt(c) => format!("token claim {c}"),
                RateKey::Route => "route".to_string(),
                RateKey::GraphqlOperation => "GraphQL operation".to_string(),
            };
            format!(
                "rate_limit, {requests} per {} by {key}, burst {burst}, {store}",
                d(*per)
            )
        }
        K::Cors { allow_origins, .. } => format!("cors for {}", allow_origins.join(", ")),
        K::OAuth2Introspection(i) => {
            use lb_core::config::OnIntrospectionError as E;
            let on_error = match i.on_error {
                E::Unavailable => "503",
                E::Deny => "401 (deny)",
                E::Allow => "let through UNAUTHENTICATED (allow)",
            };
            let scopes = match i.require_scopes.is_empty() {
                true => String::new(),
                false => format!(", needs scopes {}", i.require_scopes.join(" ")),
            };
            let forward: Vec<String> = i
                .forward_claims
                .iter()
                .map(|(c, h)| format!("{c}→{h}"))
                .collect();
            let forward = match forward.is_empty() {
                true => String::new(),
                false => format!(", forwards {}", forward.join(" ")),
            };
            format!(
                "oauth2_introspection at {} as client {} (secret from ${}){scopes}{forward}; answers reused up to {:?} (never past exp); endpoint timeout {:?}, when it fails: {on_error}",
                i.endpoint.url, i.client_id, i.client_secret_env.var, i.cache_ttl, i.timeout
            )
        }
        K::Transform {
            xml_to_json,
            json_schema_file,
            max_object_size,
        } => {
            let mut what = Vec::new();
            if *xml_to_json {
                what.push("XML answers to JSON".to_string());
            }
            if let Some(f) = json_schema_file {
                what.push(format!("JSON bodies checked against {}", f.path));
            }
            format!(
                "transform: {} (bodies up to {max_object_size} bytes)",
                what.join(", ")
            )
        }
        K::Cache {
            ttl,
            vary,
            max_size,
            max_object_size,
            redis_url,
        } => format!(
            "cache for up to {}{}, {max_size} bytes, objects up to {max_object_size} bytes{}",
            d(*ttl),
            if vary.is_empty() {
                String::new()
            } else {
                format!(", varying on {}", vary.join(", "))
            },
            redis_url
                .as_ref()
                .map_or(String::new(), |u| format!(", shared in {u}"))
        ),
        K::BasicAuth {
            users,
            htpasswd_file,
            realm,
        } => format!(
            "basic_auth \"{realm}\", {} user(s) in the config{}",
            users.len(),
            htpasswd_file
                .as_ref()
                .map_or(String::new(), |f| format!(" and those of {}", f.path))
        ),
        K::Jwt {
            algorithms,
            key,
            require_roles,
            ..
        } => {
            let from = match key {
                lb_core::config::JwtKey::SecretEnv { var, .. } => format!("secret from ${var}"),
                lb_core::config::JwtKey::PublicKeyFile(f) => format!("public key {}", f.path),
                lb_core::config::JwtKey::JwksFile(f) => format!("JWKS {}", f.path),
            };
            let roles = if require_roles.is_empty() {
                String::new()
            } else {
                format!(", requires one of {}", require_roles.join(", "))
            };
            format!("jwt {} with {from}{roles}", algorithms.join("/"))
        }
        K::Headers { request, response } => format!(
            "headers, {} request and {} response edit(s)",
            request.set.len() + request.add.len() + request.remove.len(),
            response.set.len() + response.add.len() + response.remove.len()
        ),
    }
}

fn priority(p: u8) -> String {
    match p {
        0 => String::new(),
        1 => " (backup)".into(),
        n => format!(" (priority {n})"),
    }
}

fn zone(z: Option<&str>) -> String {
    z.map_or_else(String::new, |z| format!(" zone {z}"))
}

/// The priority levels of a pool with more than one, and when each spills to the next.
fn levels(out: &mut String, p: &lb_core::config::Pool) {
    let mut levels: Vec<u8> = p.backends.iter().map(|b| b.priority).collect();
    levels.extend(p.names.iter().map(|n| n.priority));
    levels.sort_unstable();
    levels.dedup();
    if levels.len() < 2 && p.discovery.is_none() {
        return;
    }
    let f = f64::from(p.overprovisioning_pct) / 100.0;
    let list: Vec<String> = levels.iter().map(u8::to_string).collect();
    let _ = writeln!(
        out,
        "  priority levels {}: each takes all new traffic while at least {:.1}% of its weight is up (overprovisioning {f}), and spills the rest to the next",
        if list.is_empty() { "from DNS SRV".to_string() } else { list.join(", ") },
        100.0 / f
    );
}

fn resolver(r: Option<std::net::SocketAddr>) -> String {
    r.map_or(", resolv.conf".into(), |a| format!(", server {a}"))
}

/// What each backend name resolved to, for `lb check`.
pub fn resolutions(report: &[lb_core::discovery::Resolution]) -> String {
    let mut out = String::new();
    if report.is_empty() {
        return out;
    }
    out.push_str("names resolved now:\n");
    for r in report {
        match &r.result {
            Ok(m) => {
                let list: Vec<String> = m
                    .iter()
                    .map(|b| format!("{}{}", b.addr, priority(b.priority)))
                    .collect();
                let _ = writeln!(out, "  pool {}: {} -> {}", r.pool, r.name, list.join(", "));
            }
            Err(e) => {
                let _ = writeln!(out, "  pool {}: {} -> error: {e}", r.pool, r.name);
            }
        }
    }
    out
}
