//! `kind = "cache"`: a shared cache (RFC 9111) of GET and HEAD responses in front of the
//! backend, keyed by host, path, query and the `vary` request headers, bounded in bytes
//! (moka: TinyLFU admission, LRU eviction), entries living `ttl` or less if the response's
//! `s-maxage`/`max-age` says so. Stored: 200 responses without `no-store`, `private`,
//! `Set-Cookie` or a `Vary` on headers the key does not hold, up to `max_object_size`.
//!
//! A burst of misses for one key sends one request to the backend: the first is the
//! leader, the others wait (bounded) for its response to be stored and are answered from the
//! cache; if it is not stored, each goes to the backend itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use tokio::sync::Notify;

use super::redis_store::Redis;
use super::{Policy, Refusal, RequestInfo};
use crate::body::{empty, full};
use crate::upstream::Body;

/// Longest a request waits for another's response to the same key.
const COALESCE_WAIT: Duration = Duration::from_secs(10);

/// One stored response.
#[derive(Debug)]
pub struct Stored {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    stored_at: Instant,
    expires: Instant,
    /// May answer requests that carry `Authorization` (RFC 9111 §3.5).
    for_authorized: bool,
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

fn directives(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| d.trim().to_ascii_lowercase())
        .collect()
}

fn seconds(dirs: &[String], name: &str) -> Option<u64> {
    dirs.iter().find_map(|d| {
        d.strip_prefix(name)?
            .strip_prefix('=')?
            .trim_matches('"')
            .parse()
            .ok()
    })
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
                    u32::try_from(k.len() + headers + v.body.len()).unwrap_or(u32::MAX)
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

    fn key(&self, info: &RequestInfo, headers: &HeaderMap) -> String {
        let mut key = format!(
            "{}\n{}\n{}?{}",
            if info.method == Method::HEAD {
                "GET"
            } else {
                info.method.as_str()
            },
            info.host.as_deref().unwrap_or(""),
            info.path,
            info.query.as_deref().unwrap_or("")
        );
        for h in &self.vary {
            key.push('\n');
            key.push_str(h);
            key.push(':');
            for v in headers.get_all(h.as_str()) {
                key.push_str(&String::from_utf8_lossy(v.as_bytes()));
                key.push(',');
            }
        }
        key
    }

    fn fresh(&self, key: &str, authorized: bool, head: bool) -> Option<Response<Body>> {
        let s = self.store.get(key)?;
        let now = Instant::now();
        if now >= s.expires || (authorized && !s.for_authorized) {
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
    pub async fn lookup(self: &Arc<Self>, info: &RequestInfo, headers: &HeaderMap) -> Lookup {
        let cacheable_method = info.method == Method::GET || info.method == Method::HEAD;
        let dirs = directives(headers);
        if !cacheable_method || dirs.iter().any(|d| d == "no-store" || d == "no-cache") {
            self.bypass.increment(1);
            return Lookup::Bypass;
        }
        let key = self.key(info, headers);
        let authorized = headers.contains_key(header::AUTHORIZATION);
        let head = info.method == Method::HEAD;
        if let Some(resp) = self.fresh(&key, authorized, head) {
            self.hit.increment(1);
            return Lookup::Hit(resp);
        }
        if let Some(shared) = &self.shared {
            if let Some(Some(bytes)) = shared.get(&key).await {
                if let Some(stored) = decode(&bytes) {
                    self.store.insert(key.clone(), Arc::new(stored));
                    if let Some(resp) = self.fresh(&key, authorized, head) {
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
                if let Some(resp) = self.fresh(&key, authorized, head) {
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
        })
    }

    /// How long a response may be stored, if at all.
    fn storable(&self, status: StatusCode, headers: &HeaderMap) -> Option<(Duration, bool)> {
        if status != StatusCode::OK || headers.contains_key(header::SET_COOKIE) {
            return None;
        }
        let dirs = directives(headers);
        if dirs
            .iter()
            .any(|d| d == "no-store" || d == "private" || d == "no-cache")
        {
            return None;
        }
        let varies_elsewhere = headers
            .get_all(header::VARY)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|h| h.trim().to_ascii_lowercase())
            .any(|h| h == "*" || (h != "accept-encoding" && !self.vary.contains(&h)));
        if varies_elsewhere {
            return None;
        }
        let said = seconds(&dirs, "s-maxage").or_else(|| seconds(&dirs, "max-age"));
        let ttl = said.map_or(self.ttl, |s| self.ttl.min(Duration::from_secs(s)));
        let for_authorized = dirs
            .iter()
            .any(|d| d == "public" || d == "must-revalidate" || d.starts_with("s-maxage"));
        (!ttl.is_zero()).then_some((ttl, for_authorized))
    }
}

impl Fill {
    /// Whether the response may be kept, and how; `None` lets it pass untouched.
    pub fn plan(&self, status: StatusCode, headers: &HeaderMap) -> Option<(Duration, bool)> {
        let (ttl, for_authorized) = self.cache.storable(status, headers)?;
        if self.authorized && !for_authorized {
            return None;
        }
        let len = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if len.is_some_and(|l| l > self.cache.max_object) {
            return None;
        }
        Some((ttl, for_authorized))
    }

    pub fn max_object(&self) -> u64 {
        self.cache.max_object
    }

    /// Stores a whole response, then releases the requests waiting for it.
    pub fn store(
        self,
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        (ttl, for_authorized): (Duration, bool),
    ) {
        let now = Instant::now();
        let stored = Arc::new(Stored {
            status,
            headers,
            body,
            stored_at: now,
            expires: now + ttl,
            for_authorized,
        });
        self.cache.store.insert(self.key.clone(), stored.clone());
        if let Some(shared) = self.cache.shared.clone() {
            let key = self.key.clone();
            tokio::spawn(async move {
                shared.set(&key, encode(&stored), ttl).await;
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
    fill: Option<(Fill, StatusCode, HeaderMap, (Duration, bool))>,
}

impl<B> Filling<B> {
    pub fn new(
        inner: B,
        fill: Fill,
        status: StatusCode,
        headers: HeaderMap,
        plan: (Duration, bool),
    ) -> Self {
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

/// An entry as kept in Redis: a line `lb-cache-1 STATUS STORED_MS EXPIRES_MS AUTH` (wall
/// clock, so any lb can judge its age), a `name: value` line per header, an empty line, the
/// body.
fn encode(s: &Stored) -> Vec<u8> {
    let wall = |t: Instant| {
        let now = Instant::now();
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i128);
        (unix + (t.saturating_duration_since(now).as_millis() as i128)
            - (now.saturating_duration_since(t).as_millis() as i128)) as u64
    };
    let mut out = format!(
        "lb-cache-1 {} {} {} {}\n",
        s.status.as_u16(),
        wall(s.stored_at),
        wall(s.expires),
        u8::from(s.for_authorized)
    )
    .into_bytes();
    for (n, v) in &s.headers {
        out.extend_from_slice(n.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(&s.body);
    out
}

/// An entry read back from Redis; `None` for anything malformed or already expired.
fn decode(bytes: &[u8]) -> Option<Stored> {
    let end = bytes.windows(2).position(|w| w == b"\n\n")?;
    let head = std::str::from_utf8(&bytes[..end]).ok()?;
    let mut lines = head.split('\n');
    let first: Vec<&str> = lines.next()?.split(' ').collect();
    let [magic, status, stored, expires, auth] = first.as_slice() else {
        return None;
    };
    if *magic != "lb-cache-1" {
        return None;
    }
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_millis() as u64;
    let (stored, expires): (u64, u64) = (stored.parse().ok()?, expires.parse().ok()?);
    let left = expires.checked_sub(now_unix).filter(|l| *l > 0)?;
    let age = now_unix.saturating_sub(stored);
    let now = Instant::now();
    let mut headers = HeaderMap::new();
    for line in lines {
        let (n, v) = line.split_once(": ")?;
        headers.append(
            http::HeaderName::from_bytes(n.as_bytes()).ok()?,
            HeaderValue::from_str(v).ok()?,
        );
    }
    Some(Stored {
        status: StatusCode::from_u16(status.parse().ok()?).ok()?,
        headers,
        body: Bytes::copy_from_slice(&bytes[end + 2..]),
        stored_at: now.checked_sub(Duration::from_millis(age)).unwrap_or(now),
        expires: now + Duration::from_millis(left),
        for_authorized: *auth == "1",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn what_may_be_stored_and_for_how_long() {
        let c = Cache::new(
            "t",
            Duration::from_secs(600),
            &["accept-language".into()],
            1 << 20,
            1 << 10,
            None,
        );
        let ok = StatusCode::OK;
        assert_eq!(
            c.storable(ok, &HeaderMap::new()),
            Some((Duration::from_secs(600), false))
        );
        assert_eq!(
            c.storable(ok, &headers(&[("cache-control", "max-age=60")])),
            Some((Duration::from_secs(60), false))
        );
        assert_eq!(
            c.storable(
                ok,
                &headers(&[("cache-control", "max-age=60, s-maxage=30")])
            ),
            Some((Duration::from_secs(30), true))
        );
        assert_eq!(
            c.storable(ok, &headers(&[("cache-control", "max-age=99999")])),
            Some((Duration::from_secs(600), false)),
            "the policy's ttl caps it"
        );
        for no in ["no-store", "private", "no-cache", "max-age=0"] {
            assert_eq!(
                c.storable(ok, &headers(&[("cache-control", no)])),
                None,
                "{no}"
            );
        }
        assert_eq!(c.storable(StatusCode::NOT_FOUND, &HeaderMap::new()), None);
        assert_eq!(c.storable(ok, &headers(&[("set-cookie", "a=b")])), None);
        assert_eq!(
            c.storable(ok, &headers(&[("vary", "Accept-Language")]))
                .map(|s| s.0),
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            c.storable(ok, &headers(&[("vary", "Cookie")])),
            None,
            "a Vary the key does not hold"
        );
        assert_eq!(c.storable(ok, &headers(&[("vary", "*")])), None);
    }

    #[test]
    fn entries_survive_the_trip_through_redis_bytes() {
        let now = Instant::now();
        let s = Stored {
            status: StatusCode::OK,
            headers: headers(&[("content-type", "text/plain"), ("x-a", "1"), ("x-a", "2")]),
            body: Bytes::from_static(b"line\n\nwith blank lines\n"),
            stored_at: now,
            expires: now + Duration::from_secs(60),
            for_authorized: true,
        };
        let back = decode(&encode(&s)).expect("decodes");
        assert_eq!(
            (back.status, back.body.clone(), back.for_authorized),
            (s.status, s.body.clone(), true)
        );
        assert_eq!(back.headers.get_all("x-a").iter().count(), 2);
        assert!(back.expires > now + Duration::from_secs(58));
        assert!(decode(b"garbage").is_none());
        assert!(
            decode(b"lb-cache-1 200 1 2 0\n\nbody").is_none(),
            "expired long ago"
        );
    }
}
