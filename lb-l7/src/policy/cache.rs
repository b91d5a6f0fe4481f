//! `kind = "cache"`: a shared cache (RFC 9111) of GET and HEAD responses in front of the
//! backend, keyed by route, authority, path, query and the `vary` request headers
//! ([`super::cache_key`]), bounded in bytes (moka: TinyLFU admission, LRU eviction), entries
//! living `ttl` or less if the response's `s-maxage`/`max-age` (or, without them, `Expires`)
//! says so. Stored: 200 responses to GET without `no-store`, `private`, `no-cache`,
//! `Set-Cookie`, `Vary: *` or an `Expires` in the past, up to
//! `max_object_size`. An entry answers only requests that present the same values of the
//! fields its response's `Vary` names, as the backend gets them (lb's forwarding fields by
//! lb's values); one key holds one such variant at a time (fields in the policy's `vary` are
//! in the key, so their variants are kept side by side). A request with a body bypasses:
//! the backend may answer by it, and the key does not hold it.
//!
//! Authenticated requests (the plan says which: see [`crate::plan::Plan::authenticated`])
//! are answered from, and fill, only entries whose response said `public` or `s-maxage`
//! (RFC 9111 §3.5): what one user was sent is never sent to another.
//!
//! A burst of misses for one key sends one request to the backend: the first is the
//! leader, the others wait (bounded) for its response to be stored and are answered from the
//! cache; if it is not stored, each goes to the backend itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

// tokio's clock, so tests can move it (paused time) instead of waiting out a ttl; outside
// tests it is the monotonic clock. moka's own `time_to_live` only evicts, never decides.
use tokio::time::Instant;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use tokio::sync::Notify;

use super::cache_control;
use super::cache_key::{self, Primary, Varied};
use super::cache_redis::{decode, encode};
use super::redis_store::Redis;
use super::{Policy, Refusal, RequestInfo};
use crate::body::{empty, full};
use crate::upstream::Body;

/// Longest a request waits for another's response to the same key.
const COALESCE_WAIT: Duration = Duration::from_secs(10);

/// One stored response.
#[derive(Debug)]
pub struct Stored {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
    pub(super) stored_at: Instant,
    pub(super) expires: Instant,
    /// May answer authenticated requests (RFC 9111 §3.5).
    pub(super) for_authorized: bool,
    /// The request fields the response varies by, as the request it answered had them.
    pub(super) varied: Varied,
}

/// How a response is kept: for how long, whether it may answer authenticated requests, and
/// what it varies by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keep {
    ttl: Duration,
    for_authorized: bool,
    varied: Varied,
}

#[derive(Debug)]
pub struct Cache {
    ttl: Duration,
    vary: Vec<String>,
    max_object: u64,
    store: moka::sync::Cache<String, Arc<Stored>>,
    inflight: Mutex<HashMap<String, Arc<Notify>>>,
    /// `store = "redis"`: entries shared with every lb on that Redis.
    shared: Option<Arc<Redis>>,
    hit: metrics::Counter,
    miss: metrics::Counter,
    bypass: metrics::Counter,
}

/// What a request is to the cache.
#[derive(Debug)]
pub enum Lookup {
    /// Answered from the cache.
    Hit(Response<Body>),
    /// Not in the cache: fetch, and (if the response allows) store.
    Miss(Fill),
    /// Not for the cache (method, or the client said no-store/no-cache).
    Bypass,
}

/// The right and duty to fill one key: dropping it (stored or not) lets the requests waiting
/// for the key go on.
#[derive(Debug)]
pub struct Fill {
    cache: Arc<Cache>,
    key: String,
    /// Only the leader of a burst releases the others.
    leader: bool,
    authorized: bool,
    /// The request's fields, for those the response's `Vary` names; `None` for a HEAD,
    /// whose answer (no body) is never stored.
    request: Option<HeaderMap>,
}

impl Drop for Fill {
    fn drop(&mut self) {
        if self.leader {
            let waiting = lock(&self.cache.inflight).remove(&self.key);
            if let Some(n) = waiting {
                n.notify_waiters();
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Cache {
    pub fn new(
        name: &str,
        ttl: Duration,
        vary: &[String],
        max_size: u64,
        max_object: u64,
        redis_url: Option<&str>,
    ) -> Self {
        let counter = |result: &'static str| metrics::counter!("lb_cache_requests_total", "policy" => name.to_string(), "result" => result);
        Self {
            ttl,
            vary: vary.to_vec(),
            // No answer is larger than the whole cache: moka would take it and evict it
            // later, holding more than `max_size` meanwhile.
            max_object: max_object.min(max_size),
            store: moka::sync::Cache::builder()
                .max_capacity(max_size)
                .weigher(|k: &String, v: &Arc<Stored>| {
                    let headers: usize = v
                        .headers
                        .iter()
                        .map(|(n, v)| n.as_str().len() + v.len())
                        .sum();
                    let varied = cache_key::varied_len(&v.varied);
                    u32::try_from(k.len() + headers + varied + v.body.len()).unwrap_or(u32::MAX)
                })
                .time_to_live(ttl)
                .build(),
            inflight: Mutex::new(HashMap::new()),
            shared: redis_url
                .and_then(|u| Redis::new(u, format!("lb:cache:{name}:"), "cache store")),
            hit: counter("hit"),
            miss: counter("miss"),
            bypass: counter("bypass"),
        }
    }

    /// Forgets every entry (admin purge).
    pub fn purge(&self) {
        self.store.invalidate_all();
    }

    fn fresh(
        &self,
        key: &str,
        authorized: bool,
        head: bool,
        headers: &HeaderMap,
    ) -> Option<Response<Body>> {
        let s = self.store.get(key)?;
        let now = Instant::now();
        if now >= s.expires
            || (authorized && !s.for_authorized)
            || !cache_key::matches(&s.varied, headers)
        {
            return None;
        }
        let mut resp = Response::new(if head { empty() } else { full(s.body.clone()) });
        *resp.status_mut() = s.status;
        *resp.headers_mut() = s.headers.clone();
        let h = resp.headers_mut();
        h.insert(
            header::AGE,
            HeaderValue::from(now.duration_since(s.stored_at).as_secs()),
        );
        h.insert("x-cache", HeaderValue::from_static("HIT"));
        Some(resp)
    }

    /// Looks a request up; waits for a burst's leader when one is fetching the same key.
    /// `authority` is the one the request was routed by and goes on as `Host`, `headers` its
    /// fields as the backend gets them (after the route's policies, with lb's forwarding
    /// fields), `authenticated` the plan's word on it, `with_body` whether it carries a body.
    /// A request with a body (a "fat GET") is not the cache's: the backend may answer by the
    /// body, which the key does not hold.
    pub async fn lookup(
        self: &Arc<Self>,
        info: &RequestInfo,
        authority: Option<&str>,
        headers: &HeaderMap,
        authenticated: bool,
        with_body: bool,
    ) -> Lookup {
        let cacheable_method = info.method == Method::GET || info.method == Method::HEAD;
        let dirs = cache_control::directives(headers);
        if !cacheable_method || with_body || dirs.iter().any(|d| d == "no-store" || d == "no-cache")
        {
            self.bypass.increment(1);
            return Lookup::Bypass;
        }
        let primary = Primary {
            route: &info.route,
            authority,
            method: &info.method,
            path: &info.path,
            query: info.query.as_deref(),
            consumer: info.consumer.as_deref(),
        };
        let key = cache_key::primary(&primary, &self.vary, headers);
        let authorized = authenticated;
        let head = info.method == Method::HEAD;
        if let Some(resp) = self.fresh(&key, authorized, head, headers) {
            self.hit.increment(1);
            return Lookup::Hit(resp);
        }
        if let Some(shared) = &self.shared {
            if let Some(Some(bytes)) = shared.get(&cache_key::shared(&key)).await {
                if let Some(stored) = decode(&bytes) {
                    self.store.insert(key.clone(), Arc::new(stored));
                    if let Some(resp) = self.fresh(&key, authorized, head, headers) {
                        self.hit.increment(1);
                        return Lookup::Hit(resp);
                    }
                }
            }
        }
        let waiting = {
            let mut inflight = lock(&self.inflight);
            match inflight.get(&key) {
                // Created under the lock: the leader's wake-up cannot be missed.
                Some(n) => Some(n.clone().notified_owned()),
                None => {
                    inflight.insert(key.clone(), Arc::new(Notify::new()));
                    None
                }
            }
        };
        let leader = match waiting {
            None => true,
            Some(notified) => {
                let _ = tokio::time::timeout(COALESCE_WAIT, notified).await;
                if let Some(resp) = self.fresh(&key, authorized, head, headers) {
                    self.hit.increment(1);
                    return Lookup::Hit(resp);
                }
                false
            }
        };
        self.miss.increment(1);
        Lookup::Miss(Fill {
            cache: self.clone(),
            key,
            leader,
            authorized,
            request: (!head).then(|| headers.clone()),
        })
    }

    /// How long a response may be stored, if at all (and whether for authenticated
    /// requests): [`cache_control::storable`] under this cache's `ttl`.
    fn storable(&self, status: StatusCode, headers: &HeaderMap) -> Option<(Duration, bool)> {
        cache_control::storable(self.ttl, status, headers)
    }
}

impl Fill {
    /// Whether the response may be kept, and how; `None` lets it pass untouched.
    pub fn plan(&self, status: StatusCode, headers: &HeaderMap) -> Option<Keep> {
        let request = self.request.as_ref()?;
        let (ttl, for_authorized) = self.cache.storable(status, headers)?;
        if self.authorized && !for_authorized {
            return None;
        }
        let varied = cache_key::varied(&cache_key::vary_names(headers)?, request);
        let len = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if len.is_some_and(|l| l > self.cache.max_object) {
            return None;
        }
        Some(Keep {
            ttl,
            for_authorized,
            varied,
        })
    }

    pub fn max_object(&self) -> u64 {
        self.cache.max_object
    }

    /// Stores a whole response, then releases the requests waiting for it.
    pub fn store(self, status: StatusCode, headers: HeaderMap, body: Bytes, keep: Keep) {
        let now = Instant::now();
        let ttl = keep.ttl;
        let stored = Arc::new(Stored {
            status,
            headers,
            body,
            stored_at: now,
            expires: now + ttl,
            for_authorized: keep.for_authorized,
            varied: keep.varied,
        });
        self.cache.store.insert(self.key.clone(), stored.clone());
        if let Some(shared) = self.cache.shared.clone() {
            let key = self.key.clone();
            tokio::spawn(async move {
                shared
                    .set(&cache_key::shared(&key), encode(&stored), ttl)
                    .await;
            });
        }
    }
}

impl Policy for Cache {
    /// The cache works around the backend exchange (see the gateway); as a step of the
    /// chain it does nothing.
    fn request(&self, _info: &mut RequestInfo, _headers: &mut HeaderMap) -> Result<(), Refusal> {
        Ok(())
    }
}

/// A response body on its way to the client, copied (up to the cache's object limit) and
/// stored once it ends. Dropped before its end, or over the limit, nothing is stored.
pub struct Filling<B> {
    inner: B,
    copy: bytes::BytesMut,
    fill: Option<(Fill, StatusCode, HeaderMap, Keep)>,
}

impl<B> Filling<B> {
    pub fn new(inner: B, fill: Fill, status: StatusCode, headers: HeaderMap, plan: Keep) -> Self {
        Self {
            inner,
            copy: bytes::BytesMut::new(),
            fill: Some((fill, status, headers, plan)),
        }
    }
}

impl<B> Filling<B> {
    fn finish(&mut self) {
        if let Some((fill, status, headers, plan)) = self.fill.take() {
            let body = std::mem::take(&mut self.copy).freeze();
            fill.store(status, headers, body, plan);
        }
    }
}

impl<B> hyper::body::Body for Filling<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, B::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    let limit = self.fill.as_ref().map_or(0, |f| f.0.max_object());
                    if (self.copy.len() + d.len()) as u64 > limit {
                        self.fill = None;
                        self.copy = bytes::BytesMut::new();
                    } else if self.fill.is_some() {
                        self.copy.extend_from_slice(d);
                    }
                }
                // HTTP/1 stops polling a body of known length at its last byte: the end is
                // seen here, not as a final `None`.
                if self.inner.is_end_stream() {
                    self.finish();
                }
            }
            std::task::Poll::Ready(None) => self.finish(),
            std::task::Poll::Ready(Some(Err(_))) => self.fill = None,
            std::task::Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderName;
    use sha2::Digest;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    fn fill(cache: &Arc<Cache>, authorized: bool, request: Option<HeaderMap>) -> Fill {
        Fill {
            cache: cache.clone(),
            key: "k".into(),
            leader: false,
            authorized,
            request,
        }
    }

    #[test]
    fn a_fill_keeps_what_the_response_varies_by_and_whose_it_is() {
        let c = Arc::new(Cache::new(
            "t",
            Duration::from_secs(600),
            &[],
            1 << 20,
            1 << 10,
            None,
        ));
        let ok = StatusCode::OK;
        let zstd = headers(&[("accept-encoding", "zstd"), ("accept-language", "fr")]);
        let vary = headers(&[("vary", "Accept-Encoding, accept-encoding")]);
        let keep = fill(&c, false, Some(zstd.clone()))
            .plan(ok, &vary)
            .expect("stored");
        assert_eq!(
            keep.varied,
            vec![(
                HeaderName::from_static("accept-encoding"),
                Some(Bytes::copy_from_slice(&sha2::Sha256::digest(b"zstd")))
            )]
        );
        // A HEAD's answer has no body to keep.
        assert_eq!(fill(&c, false, None).plan(ok, &vary), None);
        // An authenticated request's answer is kept only if it says it is for anyone.
        assert_eq!(
            fill(&c, true, Some(zstd.clone())).plan(ok, &HeaderMap::new()),
            None
        );
        let public = headers(&[("cache-control", "public")]);
        assert!(fill(&c, true, Some(zstd)).plan(ok, &public).is_some());
    }
}
