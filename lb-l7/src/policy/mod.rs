//! Gateway policies (`[policy.NAME]`, applied per route in the order the route lists them):
//! each kind is one [`Policy`] in its own file. A policy looks at a request before it is
//! routed to a backend, may change it or answer it instead (401, 403, 429, a CORS
//! preflight), and may change the response's head on its way back.

mod api_key;
mod basic_auth;
pub mod cache;
mod cache_control;
mod cache_key;
mod cache_redis;
mod claims;
mod cors;
mod headers;
pub mod introspect;
mod ip_filter;
pub mod jwt;
mod jwt_cache;
mod rate_key;
pub mod rate_limit;
mod redis_store;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method, Response};
use lb_core::config::{Policy as PolicyConfig, PolicyKind};

use crate::body::answer;
use crate::upstream::Body;

/// What policies know of one request, and what they tell each other and the response phase.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// The client: the peer (or the PROXY header's address), or the address an `ip_filter`
    /// found behind its trusted proxies.
    pub client: IpAddr,
    pub method: Method,
    pub host: Option<String>,
    pub path: String,
    pub query: Option<String>,
    pub route: String,
    /// Set by an `api_key` policy: the name of the key presented.
    pub consumer: Option<String>,
    /// The request's `Origin`, for CORS on the response.
    pub origin: Option<HeaderValue>,
    /// `(limit, remaining, seconds to reset)` of the rate limit that let the request pass.
    pub rate: Option<(u32, u32, u64)>,
    /// The claims of the token a `jwt` policy verified.
    pub claims: Option<Arc<serde_json::Value>>,
    /// On a `graphql` route: the operation's `type:name` ([`crate::graphql::Parsed::key`]).
    pub graphql: Option<String>,
}

impl RequestInfo {
    /// What policies start from: the request as routed (`host` as sent, with any port), and
    /// nothing learnt yet.
    pub fn new(
        client: IpAddr,
        method: Method,
        host: Option<&str>,
        path: &str,
        query: Option<&str>,
        route: &str,
    ) -> Self {
        Self {
            client,
            method,
            host: host.map(crate::router::host_of),
            path: path.to_string(),
            query: query.map(str::to_string),
            route: route.to_string(),
            consumer: None,
            origin: None,
            rate: None,
            claims: None,
            graphql: None,
        }
    }
}

/// What the HTTP side read when the config was loaded, by policy index: each `jwt`
/// policy's settings with its keys, each `basic_auth` policy's users (htpasswd file
/// included).
#[derive(Debug, Default)]
pub struct Prepared {
    pub jwt: Vec<Option<jwt::Settings>>,
    pub basic: Vec<Option<Vec<(String, String)>>>,
    pub schemas: Vec<Option<crate::transform::schema::Schema>>,
    pub api_keys: Vec<Option<Vec<api_key::Named>>>,
    pub introspection: Vec<Option<introspect::Settings>>,
}

/// Reads the key sources of every `jwt` policy of `config`; problems go to `diags`.
pub fn prepare(
    config: &lb_core::config::Config,
    diags: &mut Vec<lb_core::config::Diagnostic>,
) -> Prepared {
    let mut out = Prepared::default();
    // One slot per policy in every list, so each is indexed like the config's policies.
    for p in &config.policies {
        let (mut jwt, mut basic, mut schema, mut keys) = (None, None, None, None);
        let mut introspection = None;
        match &p.kind {
            PolicyKind::Jwt {
                algorithms, key, ..
            } => {
                jwt = jwt::load_keys(key, algorithms, diags)
                    .and_then(|keys| jwt_settings(&p.kind, keys));
            }
            PolicyKind::BasicAuth {
                users,
                htpasswd_file,
                ..
            } => {
                let mut all = users.clone();
                if let Some(f) = htpasswd_file {
                    all.extend(basic_auth::read_htpasswd(f, diags));
                }
                basic = Some(all);
            }
            PolicyKind::Transform {
                json_schema_file: Some(f),
                ..
            } => schema = crate::transform::load_schema(f, diags),
            PolicyKind::ApiKey {
                keys_file: Some(f), ..
            } => keys = Some(api_key::read_keys_file(f, diags)),
            PolicyKind::OAuth2Introspection(i) => {
                introspection = introspect::prepare::settings(i, diags);
            }
            _ => {}
        }
        out.jwt.push(jwt);
        out.basic.push(basic);
        out.schemas.push(schema);
        out.api_keys.push(keys);
        out.introspection.push(introspection);
    }
    out
}

/// A policy's own answer to a request (boxed: it is the rare path).
pub type Refusal = Box<Response<Body>>;

/// The part of a policy's check that has to wait.
pub type Waiting<'a> = Pin<Box<dyn Future<Output = Result<(), Refusal>> + Send + 'a>>;

/// One policy kind.
pub trait Policy: Send + Sync + std::fmt::Debug {
    /// Looks at (and may change) a request's headers; `Err` answers the request instead.
    fn request(&self, info: &mut RequestInfo, headers: &mut HeaderMap) -> Result<(), Refusal>;

    /// Work that has to wait (a verification off the worker threads, a store over the
    /// network), run after [`Policy::request`] passed.
    fn request_async<'a>(
        &'a self,
        _info: &'a mut RequestInfo,
        _headers: &'a mut HeaderMap,
    ) -> Option<Waiting<'a>> {
        None
    }

    /// Changes the head of the response (the backend's, or lb's own answer).
    fn response(&self, _info: &RequestInfo, _headers: &mut HeaderMap) {}

    /// `(accounted, bound)` bytes of the per-key state the policy keeps, if it keeps any
    /// that clients' keys make grow (a rate limit's buckets).
    fn memory(&self) -> Option<(usize, usize)> {
        None
    }
}

/// A route's policies, in order.
pub type Chain = Vec<Arc<dyn Policy>>;

/// A `jwt` policy's settings with `keys`; `None` for other kinds.
fn jwt_settings(kind: &PolicyKind, keys: jwt::Keys) -> Option<jwt::Settings> {
    let PolicyKind::Jwt {
        algorithms,
        issuer,
        audience,
        leeway,
        require_roles,
        roles_claim,
        forward_claims,
        ..
    } = kind
    else {
        return None;
    };
    Some(jwt::Settings {
        algorithms: algorithms.clone(),
        keys,
        issuer: issuer.clone(),
        audience: audience.clone(),
        leeway: *leeway,
        require_roles: require_roles.clone(),
        roles_claim: roles_claim.clone(),
        forward_claims: forward_claims.clone(),
    })
}

/// The policy of a validated `[policy.NAME]` (number `index`), with what was read for it at
/// load time. A `jwt` policy whose keys were not read (nothing prepared them) refuses every
/// token: it fails closed.
pub fn build(p: &PolicyConfig, index: usize, prepared: Option<&Prepared>) -> Arc<dyn Policy> {
    match &p.kind {
        PolicyKind::Jwt { .. } => {
            let settings = prepared
                .and_then(|pr| pr.jwt.get(index).cloned().flatten())
                .or_else(|| jwt_settings(&p.kind, jwt::Keys::Set(Vec::new())));
            // Always `Some` for a jwt kind; a policy without settings accepts no token.
            let settings = settings.unwrap_or_default();
            Arc::new(jwt::Jwt::new(&p.name, settings))
        }
        PolicyKind::Transform { .. } => match build_transform(p, index, prepared) {
            Some(t) => t,
            None => Arc::new(headers::Headers::new(
                Default::default(),
                Default::default(),
            )),
        },
        PolicyKind::Cache { .. } => match build_cache(p) {
            Some(c) => c,
            None => Arc::new(headers::Headers::new(
                Default::default(),
                Default::default(),
            )),
        },
        PolicyKind::BasicAuth { users, realm, .. } => {
            // Without the file read at load, only the config's own users (fails closed for
            // the file's).
            let all = prepared
                .and_then(|pr| pr.basic.get(index).cloned().flatten())
                .unwrap_or_else(|| users.clone());
            Arc::new(basic_auth::BasicAuth::new(&p.name, all, realm))
        }
        PolicyKind::IpFilter {
            allow,
            deny,
            trusted_proxies,
        } => Arc::new(ip_filter::IpFilter::new(
            &p.name,
            allow,
            deny,
            trusted_proxies,
        )),
        PolicyKind::ApiKey {
            keys,
            header,
            query,
            ..
        } => {
            // The file's keys as read at load; without them, only the config's (fails closed).
            let mut all = keys.clone();
            if let Some(file_keys) =
                prepared.and_then(|pr| pr.api_keys.get(index).cloned().flatten())
            {
                all.extend(file_keys);
            }
            Arc::new(api_key::ApiKey::new(
                &p.name,
                &all,
                header,
                query.as_deref(),
            ))
        }
        PolicyKind::RateLimit {
            requests,
            per,
            burst,
            key,
            max_keys,
            store,
        } => Arc::new(rate_limit::RateLimit::new(
            &p.name,
            *requests,
            *per,
            *burst,
            key.clone(),
            *max_keys,
            store,
        )),
        PolicyKind::Cors {
            allow_origins,
            allow_methods,
            allow_headers,
            expose_headers,
            allow_credentials,
            max_age,
        } => Arc::new(cors::Cors::new(
            allow_origins,
            allow_methods,
            allow_headers,
            expose_headers,
            *allow_credentials,
            *max_age,
        )),
        PolicyKind::Headers { request, response } => {
            Arc::new(headers::Headers::new(request.clone(), response.clone()))
        }
        PolicyKind::OAuth2Introspection(i) => {
            // Without the secret read at load, every token is unchecked: 503 (fails closed).
            let settings = prepared.and_then(|pr| pr.introspection.get(index).cloned().flatten());
            Arc::new(introspect::Introspect::new(&p.name, i, settings))
        }
    }
}

/// Runs a route's policies on a request: `Err` is the index and answer of the first that
/// refused it,
/// with the response phase of the policies before it applied (so e.g. CORS headers reach
/// the browser on a 429).
pub async fn on_request(
    chain: &Chain,
    info: &mut RequestInfo,
    headers: &mut HeaderMap,
) -> Result<(), (usize, Refusal)> {
    for (i, p) in chain.iter().enumerate() {
        let mut outcome = p.request(info, headers);
        if outcome.is_ok() {
            if let Some(wait) = p.request_async(info, headers) {
                outcome = wait.await;
            }
        }
        if let Err(mut resp) = outcome {
            for q in &chain[..i] {
                q.response(info, resp.headers_mut());
            }
            return Err((i, resp));
        }
    }
    Ok(())
}

/// Runs a route's policies on a response head, last first (as layers unwinding).
pub fn on_response(chain: &Chain, info: &RequestInfo, headers: &mut HeaderMap) {
    for p in chain.iter().rev() {
        p.response(info, headers);
    }
}

/// `lb_auth_failures_total{policy,reason}`.
pub(crate) fn auth_failure(policy: &str, reason: &'static str) {
    metrics::counter!("lb_auth_failures_total", "policy" => policy.to_string(), "reason" => reason)
        .increment(1);
}

/// A refusal with the gateway's JSON body and extra headers.
pub(crate) fn refuse_with(
    status: u16,
    message: &str,
    headers: &[(http::HeaderName, HeaderValue)],
) -> Refusal {
    let mut resp = Box::new(answer(status, message));
    for (n, v) in headers {
        resp.headers_mut().insert(n.clone(), v.clone());
    }
    resp
}

/// The cache of a `cache` policy (the gateway keeps it typed, to work around the exchange).
pub fn build_cache(p: &PolicyConfig) -> Option<Arc<cache::Cache>> {
    match &p.kind {
        PolicyKind::Cache {
            ttl,
            vary,
            max_size,
            max_object_size,
            redis_url,
        } => Some(Arc::new(cache::Cache::new(
            &p.name,
            *ttl,
            vary,
            *max_size,
            *max_object_size,
            redis_url.as_deref(),
        ))),
        _ => None,
    }
}

/// The transform of a `transform` policy. Without its schema read at load (nothing
/// prepared it), it refuses every body it should check: it fails closed.
pub fn build_transform(
    p: &PolicyConfig,
    index: usize,
    prepared: Option<&Prepared>,
) -> Option<Arc<crate::transform::Transform>> {
    match &p.kind {
        PolicyKind::Transform {
            xml_to_json,
            json_schema_file,
            max_object_size,
        } => {
            let schema = json_schema_file.as_ref().map(|_| {
                prepared
                    .and_then(|pr| pr.schemas.get(index).cloned().flatten())
                    .unwrap_or_else(crate::transform::schema::Schema::reject_all)
            });
            Some(Arc::new(crate::transform::Transform {
                xml_to_json: *xml_to_json,
                schema,
                max: *max_object_size,
            }))
        }
        _ => None,
    }
}
