use std::sync::Arc;

use lb_core::pool::Pool;
use proptest::prelude::*;

use super::*;

/// A gateway over two pools with the route features that change what is forwarded:
/// prefix stripping, a regex rewrite, a host route, a case-insensitive route.
fn gateway(listener_extra: &str) -> Gateway {
    let text = format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:1\"\nprotocol = \"http\"\npool = \"p0\"\n{listener_extra}\n\
         [[pool]]\nname = \"p0\"\nbackends = [{{ addr = \"127.0.0.1:9\" }}]\n\
         [[pool]]\nname = \"p1\"\nbackends = [{{ addr = \"127.0.0.1:10\" }}]\n\
         [[route]]\nlistener = \"web\"\nname = \"api\"\nmatch = {{ path_prefix = \"/api\" }}\npool = \"p1\"\nstrip_prefix = true\n\
         [[route]]\nlistener = \"web\"\nname = \"users\"\nmatch = {{ path_regex = \"^/u/([0-9]+)$\" }}\nrewrite = \"/users/$1\"\npool = \"p1\"\n\
         [[route]]\nlistener = \"web\"\nname = \"host\"\nmatch = {{ host = \"*.example\", path_prefix = \"/h\" }}\npool = \"p1\"\n\
         [[route]]\nlistener = \"web\"\nname = \"ci\"\nmatch = {{ path_prefix = \"/Private\", case = \"insensitive\" }}\npool = \"p1\"\nrewrite = \"/internal\"\n"
    );
    let (loaded, prepared) = crate::gateway::load_str("twin.toml", &text).expect("valid");
    let pools: Vec<Arc<Pool>> = loaded
        .config
        .pools
        .iter()
        .map(|p| Arc::new(Pool::new(p, None)))
        .collect();
    let mut gw = Gateway::build(&loaded, &prepared, 0, &pools);
    // Generated request IDs from fixed bits, so both paths' are comparable.
    gw.ids = || 0x5eed;
    gw
}

const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "get",
];

const TARGETS: &[&str] = &[
    "/",
    "/api",
    "/api/x",
    "/apix",
    "/a/../api/y",
    "/%2e%2e/api",
    "/x;p=1",
    "/api;v=1/users",
    "/u/42",
    "/u/42;x",
    "/h/1",
    "/PRIVATE/a",
    "/private;s=1/b",
    "/a%2Fb",
    "/a\\b",
    "//api//z",
    "/%zz",
    "/a`b",
    "/\u{e4}",
    "/q?x=1&y=%2F",
    "/frag#x",
    "/a/..;/api",
    "/;x/api",
    "*",
    "http://a.example/h/2",
    "/a%00",
    "/../../..",
];

const FIELDS: &[&str] = &[
    "Host: a.example",
    "Host: A.Example:8080",
    "Host: b.example",
    "Host: ",
    "Host: x y",
    "Host: u@a.example",
    "Content-Length: 0",
    "Content-Length: 5",
    "Content-Length: 5, 5",
    "Content-Length: +5",
    "content-length: 6",
    "Transfer-Encoding: chunked",
    "Transfer-Encoding: gzip",
    "Connection: close",
    "Connection: keep-alive",
    "Connection: content-length",
    "Connection: host",
    "Connection: x-secret, te",
    "Connection: upgrade",
    "Connection: x-forwarded-for, transfer-encoding",
    "X-Secret: 1",
    "TE: trailers",
    "TE: gzip",
    "Upgrade: websocket",
    "Upgrade: h2c",
    "Expect: 100-continue",
    "X-Forwarded-For: 10.9.9.9",
    "Forwarded: for=10.9.9.9",
    "X-Forwarded-Host: evil",
    "Via: 1.1 other",
    "Keep-Alive: timeout=5",
    "Proxy-Connection: keep-alive",
    "Trailer: x-sum",
    "X-Custom: v",
    "x-custom: w",
    "Cookie: a=1",
    "Accept: */*",
    "X-Empty: ",
    "X-Tab: a\tb",
    "X-Request-Id: req-1",
    "x-request-id: 0123456789abcdef0123456789abcdef",
    "X-Request-Id: a b",
    "X-Request-Id: ",
    "X-Request-Id: a\x7fb",
    "Connection: x-request-id",
    "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "Traceparent: 00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",
    "traceparent: 00-00000000000000000000000000000000-b7ad6b7169203331-01",
    "traceparent: 7f-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00-x",
    "tracestate: congo=t61rcWkgMzE",
    "tracestate: not a list member",
];

fn head() -> impl Strategy<Value = String> {
    (
        prop::sample::select(METHODS),
        prop::sample::select(TARGETS),
        prop::sample::select(&["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"][..]),
        prop::collection::vec(prop::sample::select(FIELDS), 0..7),
        any::<bool>(),
    )
        .prop_map(|(m, t, v, fields, host_first)| {
            let mut s = format!("{m} {t} {v}\r\n");
            if host_first {
                s.push_str("Host: a.example\r\n");
            }
            for f in fields {
                s.push_str(f);
                s.push_str("\r\n");
            }
            s.push_str("\r\n");
            s
        })
}

/// The client's fields named `name` in `raw`, values trimmed.
fn sent<'r>(raw: &'r str, name: &str) -> Vec<&'r str> {
    raw.split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim_matches(|c| c == ' ' || c == '\t'))
        .collect()
}

/// Trace context: with `[tracing]`, exactly one valid `traceparent`, continuing the client's
/// single valid one, and a `tracestate` only when that one was kept; without, the client's
/// fields as they came.
fn traced(raw: &str, f: &Forwarded, on: bool) -> Result<(), String> {
    let got = |name: &str| -> Vec<&[u8]> {
        f.fields
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| &v[..])
            .collect()
    };
    let (parents, states) = (got("traceparent"), got("tracestate"));
    let (sent_parents, sent_states) = (sent(raw, "traceparent"), sent(raw, "tracestate"));
    let named = |n: &str| {
        sent(raw, "connection")
            .iter()
            .any(|c| c.eq_ignore_ascii_case(n))
    };
    if !on {
        // Fields come sorted: compare as multisets.
        let mut as_sent: Vec<&[u8]> = sent_parents.iter().map(|v| v.as_bytes()).collect();
        as_sent.sort();
        if !named("traceparent") && parents != as_sent {
            return Err(format!("traceparent changed with tracing off: {parents:?}"));
        }
        return Ok(());
    }
    let [one] = parents[..] else {
        return Err(format!("traceparents {parents:?}"));
    };
    let fwd = crate::trace::parse(one).ok_or("lb's traceparent is invalid")?;
    let client = match sent_parents[..] {
        [p] => crate::trace::parse(p.as_bytes()),
        _ => None,
    };
    if let Some(c) = client {
        if c.trace_id != fwd.trace_id || c.parent_id == fwd.parent_id {
            return Err("the client's trace was not continued with a new span".into());
        }
    }
    if !states.is_empty() && (client.is_none() || sent_states.len() != 1) {
        return Err(format!("tracestate {states:?} went on without its trace"));
    }
    Ok(())
}

/// What makes a forwarded head of `raw` safe whichever path wrote it.
fn sound(raw: &str, f: &Forwarded) -> Result<(), String> {
    let count = |n: &str| f.fields.iter().filter(|(k, _)| k == n).count();
    if count("host") != 1 {
        return Err(format!("{} Host fields", count("host")));
    }
    if count("content-length") > 1 || count("transfer-encoding") > 0 {
        return Err("framing fields the body does not have".into());
    }
    // A WebSocket upgrade (the one protocol these routes allow) goes on as lb writes it.
    let upgrade = raw.contains("Upgrade: websocket") && raw.contains("Connection: upgrade");
    for hop in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "trailer",
    ] {
        let lbs = match hop {
            "connection" => b"upgrade".as_slice(),
            "upgrade" => b"websocket",
            _ => b"",
        };
        let written = |(k, v): &&(String, Vec<u8>)| k == hop && upgrade && v == lbs;
        if f.fields
            .iter()
            .filter(|(k, _)| k == hop)
            .any(|kv| !written(&kv))
        {
            return Err(format!("{hop} went on"));
        }
    }
    if raw.contains("Connection: x-secret") && count("x-secret") > 0 {
        return Err("a field Connection named went on".into());
    }
    // One request ID, always a valid one; a client's single valid one is kept.
    let ids: Vec<&Vec<u8>> = f
        .fields
        .iter()
        .filter(|(k, _)| k == "x-request-id")
        .map(|(_, v)| v)
        .collect();
    if ids.len() != 1 || !crate::request_id::valid(ids[0]) {
        return Err(format!("request ids {ids:?}"));
    }
    if let [one] = sent(raw, "x-request-id")[..] {
        if crate::request_id::valid(one.as_bytes()) && ids[0] != one.as_bytes() {
            return Err(format!("the client's id {one:?} was not kept"));
        }
    }
    if !f.target.starts_with('/') || f.target.contains('#') {
        return Err(format!("target {}", f.target));
    }
    Ok(())
}

#[test]
fn a_few_heads_agree_and_are_sound() {
    let gw = gateway("");
    for raw in [
        "GET /api/x?q=1 HTTP/1.1\r\nHost: a.example\r\nConnection: content-length, x-secret\r\nX-Secret: 1\r\nContent-Length: 0\r\n\r\n",
        "POST /u/42 HTTP/1.1\r\nHost: A.Example:8080\r\nContent-Length: 5\r\nTE: trailers\r\n\r\n",
        "GET /PRIVATE/a HTTP/1.1\r\nHost: a.example\r\nConnection: host\r\n\r\n",
        "GET /frag#x HTTP/1.1\r\nHost: a.example\r\n\r\n",
    ] {
        let lean = lean(&gw, raw.as_bytes()).unwrap_or_else(|| panic!("lean carries {raw:?}"));
        assert_eq!(general(&gw, raw.as_bytes()), Ok(lean.clone()), "{raw:?}");
        sound(raw, &lean).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
    }
    let f = lean(&gw, b"GET /PRIVATE/a HTTP/1.1\r\nHost: a.example\r\n\r\n").expect("carried");
    assert_eq!(
        f.target, "/internal/a",
        "the case-insensitive route rewrote it"
    );
    let f = lean(&gw, b"GET /frag#x HTTP/1.1\r\nHost: a.example\r\n\r\n").expect("carried");
    assert_eq!(f.target, "/frag", "a fragment is never forwarded");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whatever the lean path carries, the general path carries the same way; and what
    /// either forwards has one Host, lb's framing, no hop-by-hop field.
    #[test]
    fn the_paths_forward_the_same_head(raw in head(), extra in prop::sample::select(&[
        "", "forwarded_headers = \"append\"\nvia = true", "escaped_slashes = \"decode\"",
        "escaped_slashes = \"keep\"", "[tracing]",
    ][..])) {
        let gw = gateway(extra);
        let on = gw.tracing.is_some();
        prop_assert_eq!(on, extra == "[tracing]");
        let general = general(&gw, raw.as_bytes());
        if let Some(lean) = lean(&gw, raw.as_bytes()) {
            prop_assert_eq!(&general, &Ok(lean.clone()), "{:?}", raw);
            prop_assert!(sound(&raw, &lean).is_ok(), "{:?}: {:?}", raw, sound(&raw, &lean));
            prop_assert!(traced(&raw, &lean, on).is_ok(), "{:?}: {:?}", raw, traced(&raw, &lean, on));
        }
        if let Ok(g) = &general {
            prop_assert!(sound(&raw, g).is_ok(), "{:?}: {:?}", raw, sound(&raw, g));
            prop_assert!(traced(&raw, g, on).is_ok(), "{:?}: {:?}", raw, traced(&raw, g, on));
        }
    }
}

/// The property above is only as good as its inputs: they must reach both what the lean path
/// carries and what lb refuses, often.
#[test]
fn the_generated_heads_reach_every_outcome() {
    use proptest::strategy::ValueTree;
    let gw = gateway("");
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut carried, mut refused, mut handed) = (0, 0, 0);
    for _ in 0..1000 {
        let raw = head().new_tree(&mut runner).expect("value").current();
        match (lean(&gw, raw.as_bytes()), general(&gw, raw.as_bytes())) {
            (Some(_), _) => carried += 1,
            (None, Err(_)) => refused += 1,
            (None, Ok(_)) => handed += 1,
        }
    }
    assert!(
        carried > 100 && refused > 100 && handed > 50,
        "{carried} {refused} {handed}"
    );
}
