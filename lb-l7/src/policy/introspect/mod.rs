//! `kind = "oauth2_introspection"`: opaque bearer tokens checked by asking the authorization
//! server (RFC 7662). A token is sent only if it is a well-formed b64token of at most
//! [`MAX_TOKEN`] bytes; the answer decides: active (and within `exp`/`nbf`) with every
//! `require_scopes` scope passes, with `forward_claims` set as request headers (the client's
//! copies removed first) and the kept claims offered to later policies as a jwt's are;
//! missing scopes → 403 `insufficient_scope`; not active → 401 `invalid_token`.
//!
//! Answers are reused ([`cache`]): an active one up to `cache_ttl` and never past the
//! token's `exp`, a negative one briefly ([`answer::NEGATIVE_TTL`]); concurrent requests with
//! one new token share one call. When the endpoint cannot answer (down, slower than
//! `timeout`, a status other than 200, an answer that is not RFC 7662 JSON) the token is
//! unchecked: `on_error` decides (503 by default), the change is logged once each way, and
//! each such request counts in `lb_auth_failures_total{reason="introspection_unavailable"}`.
//!
//! Like the jwt policy, the `Authorization` header goes on to the backend unchanged.

pub mod answer;
pub mod cache;
pub mod client;
pub mod prepare;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{header, HeaderMap, HeaderValue};
use lb_core::config::{Introspection, OnIntrospectionError};
use tokio::time::Instant;

use self::answer::Answer;
use self::cache::{Cache, Lookup, Settled, Verdict};
use self::client::Client;
use super::claims::Forward;
use super::{auth_failure, refuse_with, Policy, Refusal, RequestInfo, Waiting};

/// Longest token sent to the endpoint (bytes); longer ones are refused without a call.
pub const MAX_TOKEN: usize = 4096;

/// What the HTTP side read for the policy when the config loaded.
#[derive(Clone)]
pub struct Settings {
    pub secret: String,
    /// For an https endpoint.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("secret", &"<hidden>")
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

#[derive(Debug)]
pub struct Introspect {
    name: String,
    /// `None`: nothing was read for the policy (no secret); every token is unchecked and
    /// answered 503 whatever `on_error` says (fails closed).
    client: Option<Client>,
    cache: Cache,
    cache_ttl: Duration,
    require_scopes: Vec<String>,
    forward: Forward,
    on_error: OnIntrospectionError,
    /// Whether the endpoint is failing (each change is logged once).
    failing: AtomicBool,
}

/// The bearer token of a request: `Ok(None)` without any, `Err` for one lb refuses to send
/// (several `Authorization` fields, or a token that is no b64token).
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ()> {
    let mut all = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(v), None) = (all.next(), all.next()) else {
        return match headers.contains_key(header::AUTHORIZATION) {
            true => Err(()),
            false => Ok(None),
        };
    };
    let v = v.to_str().map_err(|_| ())?;
    let Some((scheme, token)) = v.split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = token.trim_start_matches(' ');
    match answer::is_b64token(token, MAX_TOKEN) {
        true => Ok(Some(token)),
        false => Err(()),
    }
}

fn wall_clock() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn challenge(error: &str, description: &str) -> (http::HeaderName, HeaderValue) {
    let v = HeaderValue::from_str(&format!(
        "Bearer error=\"{error}\", error_description=\"{description}\""
    ))
    .unwrap_or(HeaderValue::from_static("Bearer"));
    (header::WWW_AUTHENTICATE, v)
}

impl Introspect {
    pub fn new(name: &str, cfg: &Introspection, settings: Option<Settings>) -> Self {
        let client = settings.and_then(|s| {
            Client::new(&cfg.endpoint, &cfg.client_id, &s.secret, s.tls, cfg.timeout)
        });
        Self {
            name: name.to_string(),
            on_error: match client {
                Some(_) => cfg.on_error,
                None => OnIntrospectionError::Unavailable,
            },
            client,
            cache: Cache::new(),
            cache_ttl: cfg.cache_ttl,
            require_scopes: cfg.require_scopes.clone(),
            forward: Forward::new(&cfg.forward_claims),
            failing: AtomicBool::new(false),
        }
    }

    /// Asks the endpoint about `token` (a verdict not to reuse when it could not say).
    async fn ask(&self, token: &str) -> Settled {
        let Some(client) = &self.client else {
            return Settled {
                verdict: Verdict::Unavailable("no client secret was read".into()),
                until: Instant::now(),
            };
        };
        let body = client.call(token).await;
        let (now, wall) = (Instant::now(), wall_clock());
        let parsed = match body {
            Ok(b) => answer::parse(&b, wall, self.forward.claims()).map_err(|g| g.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let (verdict, ttl) = match parsed {
            Ok(Answer::Active(g)) => {
                let ttl = answer::positive_ttl(&g, self.cache_ttl, wall);
                (Verdict::Active(Arc::new(g)), ttl)
            }
            Ok(Answer::Inactive(why)) => {
                (Verdict::Inactive(why), answer::negative_ttl(self.cache_ttl))
            }
            Err(why) => (Verdict::Unavailable(why), Duration::ZERO),
        };
        match &verdict {
            Verdict::Unavailable(why) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(policy = %self.name, endpoint = %client.url(), error = %why,
                        "token introspection failing; tokens go unchecked (on_error) until it answers");
                }
            }
            _ => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(policy = %self.name, endpoint = %client.url(), "token introspection answers again");
                }
            }
        }
        Settled {
            verdict,
            until: now + ttl,
        }
    }

    async fn verdict(&self, token: &str) -> Verdict {
        let digest = self.cache.digest(token);
        match self.cache.lookup(digest, Instant::now()) {
            Lookup::Hit(v) => v,
            Lookup::Busy => Verdict::Unavailable("too many introspections in flight".into()),
            Lookup::Miss(ticket) => ticket
                .cell()
                .get_or_init(|| self.ask(token))
                .await
                .verdict
                .clone(),
        }
    }

    async fn check(&self, info: &mut RequestInfo, headers: &mut HeaderMap) -> Result<(), Refusal> {
        let token = match bearer(headers) {
            Ok(Some(t)) => t.to_string(),
            Ok(None) => {
                auth_failure(&self.name, "missing");
                return Err(refuse_with(
                    401,
                    "a bearer token is required",
                    &[(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
                ));
            }
            Err(()) => {
                auth_failure(&self.name, "malformed");
                return Err(refuse_with(
                    400,
                    "the bearer token is malformed",
                    &[challenge("invalid_request", "malformed bearer token")],
                ));
            }
        };
        let verdict = self.verdict(&token).await;
        drop(token);
        match verdict {
            Verdict::Active(g) => {
                if !answer::has_scopes(&self.require_scopes, &g.scopes) {
                    auth_failure(&self.name, "insufficient_scope");
                    let scope = self.require_scopes.join(" ");
                    let v = HeaderValue::from_str(&format!(
                        "Bearer error=\"insufficient_scope\", scope=\"{scope}\""
                    ))
                    .unwrap_or(HeaderValue::from_static(
                        "Bearer error=\"insufficient_scope\"",
                    ));
                    return Err(refuse_with(
                        403,
                        "the token lacks a scope this route needs",
                        &[(header::WWW_AUTHENTICATE, v)],
                    ));
                }
                self.forward.apply(&g.claims, headers);
                info.claims = Some(g.claims.clone());
                Ok(())
            }
            Verdict::Inactive(why) => {
                auth_failure(&self.name, why);
                Err(refuse_with(
                    401,
                    "the token is not active",
                    &[challenge("invalid_token", "the token is not active")],
                ))
            }
            Verdict::Unavailable(_) => {
                auth_failure(&self.name, "introspection_unavailable");
                match self.on_error {
                    OnIntrospectionError::Unavailable => {
                        Err(refuse_with(503, "the token cannot be checked now", &[]))
                    }
                    OnIntrospectionError::Deny => Err(refuse_with(
                        401,
                        "the token cannot be checked",
                        &[challenge("invalid_token", "the token cannot be checked")],
                    )),
                    // Unauthenticated: the client's copies of the forwarded headers are gone
                    // (`request`), nothing is set, no claims for later policies.
                    OnIntrospectionError::Allow => Ok(()),
                }
            }
        }
    }
}

impl Policy for Introspect {
    fn request(&self, _info: &mut RequestInfo, headers: &mut HeaderMap) -> Result<(), Refusal> {
        // A client must not pass claims off as checked ones, whatever happens next.
        self.forward.strip(headers);
        Ok(())
    }

    fn request_async<'a>(
        &'a self,
        info: &'a mut RequestInfo,
        headers: &'a mut HeaderMap,
    ) -> Option<Waiting<'a>> {
        Some(Box::pin(self.check(info, headers)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                header::AUTHORIZATION,
                HeaderValue::from_bytes(v.as_bytes()).expect("value"),
            );
        }
        h
    }

    #[test]
    fn bearer_tokens_are_taken_strictly() {
        assert_eq!(bearer(&auth(&[])), Ok(None));
        assert_eq!(bearer(&auth(&["Basic YTpi"])), Ok(None));
        assert_eq!(
            bearer(&auth(&["Bearer abc.DEF-_~+/=="])),
            Ok(Some("abc.DEF-_~+/=="))
        );
        assert_eq!(bearer(&auth(&["bearer   abc"])), Ok(Some("abc")));
        assert_eq!(bearer(&auth(&["Bearer a b"])), Err(()));
        assert_eq!(bearer(&auth(&["Bearer a\tb"])), Err(()));
        assert_eq!(bearer(&auth(&["Bearer "])), Err(()));
        assert_eq!(
            bearer(&auth(&["Bearer a", "Bearer b"])),
            Err(()),
            "ambiguous"
        );
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN + 1));
        assert_eq!(bearer(&auth(&[&long])), Err(()));
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_bytes(b"Bearer \xff").expect("value"),
        );
        assert_eq!(bearer(&h), Err(()));
    }
}
