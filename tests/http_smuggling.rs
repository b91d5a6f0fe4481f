//! Requests built to get past lb's routes and policies, through the real binary on both HTTP
//! paths (lean and general), in front of an origin that records exactly what reached it.
//! Whatever the request, the origin never gets a request lb did not route and police, a head
//! without exactly one Host, or a body read as a head; and both paths answer alike.

mod common;

use common::origin::{responses, Origin, Received};
use common::*;

/// `/admin` and `/secure` (any case) are refused to everyone (403), `/private` needs an API
/// key (401), `/stamped` gets a field added by a policy; the rest goes to the origin.
const ROUTES: &str = r#"
[policy.nobody]
kind = "ip_filter"
allow = ["192.0.2.0/24"]

[policy.key]
kind = "api_key"
keys = [{ name = "cli", sha256 = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8" }]

[policy.stamp]
kind = "headers"
request = { set = { "x-added" = "lb" } }

[[route]]
listener = "web"
name = "admin"
match = { path_prefix = "/admin" }
pool = "site"
policies = ["nobody"]

[[route]]
listener = "web"
name = "secure"
match = { path_prefix = "/secure", case = "insensitive" }
pool = "site"
policies = ["nobody"]

[[route]]
listener = "web"
name = "private"
match = { path_prefix = "/private" }
pool = "site"
policies = ["key"]

[[route]]
listener = "web"
name = "stamped"
match = { path_prefix = "/stamped" }
pool = "site"
policies = ["stamp"]
"#;

/// One attack: the bytes, the statuses the client must get, and the targets the origin must
/// receive (in order).
struct Case {
    name: &'static str,
    raw: &'static str,
    statuses: &'static [u16],
    origin: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        name: "Connection naming Content-Length keeps the body a body",
        raw: "POST /public HTTP/1.1\r\nHost: a\r\nConnection: content-length\r\nContent-Length: 49\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\nX-User-Id: root\r\n\r\n",
        statuses: &[200],
        origin: &["/public"],
    },
    Case {
        name: "Connection naming Host keeps the Host",
        raw: "GET /public HTTP/1.1\r\nHost: a\r\nConnection: host\r\n\r\n",
        statuses: &[200],
        origin: &["/public"],
    },
    Case {
        name: "Connection naming Transfer-Encoding keeps the chunks",
        raw: "POST /public HTTP/1.1\r\nHost: a\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        statuses: &[200],
        origin: &["/public"],
    },
    Case {
        name: "Content-Length and Transfer-Encoding together",
        raw: "POST /public HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
        statuses: &[400],
        origin: &[],
    },
    Case {
        name: "Transfer-Encoding before Content-Length",
        raw: "POST /public HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n1\r\nZ\r\n0\r\n\r\n",
        statuses: &[400],
        origin: &[],
    },
    Case {
        name: "two different Content-Lengths",
        raw: "POST /public HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        statuses: &[400],
        origin: &[],
    },
    Case {
        name: "a coding after chunked",
        raw: "POST /public HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        statuses: &[400],
        origin: &[],
    },
    Case {
        name: "an obfuscated chunked",
        raw: "POST /public HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        statuses: &[400],
        origin: &[],
    },
    Case {
        name: "a signed Content-Length",
        raw: "POST /public HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc",
        statuses: &[400],
        origin: &[],
    },
    Case {
        name: "a fragment does not hide the route",
        raw: "GET /admin#x HTTP/1.1\r\nHost: a\r\n\r\n",
        statuses: &[403],
        origin: &[],
    },
    Case {
        name: "an encoded slash",
        raw: "GET /x/..%2fadmin HTTP/1.1\r\nHost: a\r\n\r\n",
        statuses: &[400],
        origin: &[],
    },
    Case {
        name: "an encoded slash inside the guarded prefix",
        raw: "GET /private%2Fdata HTTP/1.1\r\nHost: a\r\n\r\n",
        statuses: &[400],
        origin: &[],
    },
    Case {
        name: "backslashes",
        raw: "GET /public\\..\\admin HTTP/1.1\r\nHost: a\r\n\r\n",
        statuses: &[400],
        origin: &[],
    },
    Case {
        name: "path parameters on the guarded segment",
        raw: "GET /private;jsessionid=x HTTP/1.1\r\nHost: a\r\n\r\n",
        statuses: &[401],
        origin: &[],
    },
    Case {
        name: "a dot segment hidden by parameters",
        raw: "GET /public/..;x/admin HTTP/1.1\r\nHost: a\r\n\r\n",
        statuses: &[400],
        origin: &[],
    },
    Case {
        name: "another case on a case-insensitive route",
        raw: "GET /SeCuRe/x HTTP/1.1\r\nHost: a\r\n\r\n",
        statuses: &[403],
        origin: &[],
    },
    Case {
        name: "dot segments resolved before routing",
        raw: "GET /public/../admin HTTP/1.1\r\nHost: a\r\n\r\n",
        statuses: &[403],
        origin: &[],
    },
    Case {
        name: "the absolute form's authority is the Host",
        raw: "GET http://a.example/public HTTP/1.1\r\nHost: evil.example\r\n\r\n",
        statuses: &[200],
        origin: &["/public"],
    },
    Case {
        name: "the absolute form does not get past a route",
        raw: "GET http://a.example/admin HTTP/1.1\r\nHost: a.example\r\n\r\n",
        statuses: &[403],
        origin: &[],
    },
    Case {
        name: "an upgrade to h2c goes on as a plain request",
        raw: "GET /public HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        statuses: &[200],
        origin: &["/public"],
    },
    Case {
        name: "a chunked body with an extension, then a request to refuse",
        raw: "POST /public HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
        statuses: &[200, 403],
        origin: &["/public"],
    },
    Case {
        name: "a Content-Length body that looks like a request",
        raw: "POST /public HTTP/1.1\r\nHost: a\r\nContent-Length: 32\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\nGET /public HTTP/1.1\r\nHost: a\r\n\r\n",
        statuses: &[200, 200],
        origin: &["/public", "/public"],
    },
    Case {
        name: "Connection cannot remove what a policy added",
        raw: "GET /stamped HTTP/1.1\r\nHost: a\r\nConnection: x-added\r\nX-Added: client\r\n\r\n",
        statuses: &[200],
        origin: &["/stamped"],
    },
    Case {
        name: "no Host",
        raw: "GET /public HTTP/1.1\r\n\r\n",
        statuses: &[400],
        origin: &[],
    },
    Case {
        name: "two Hosts",
        raw: "GET /public HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        statuses: &[400],
        origin: &[],
    },
    Case {
        name: "userinfo in the Host",
        raw: "GET /public HTTP/1.1\r\nHost: user@a\r\n\r\n",
        statuses: &[400],
        origin: &[],
    },
    Case {
        name: "HTTP/1.0 without Host goes with lb's address as its Host",
        raw: "GET /public HTTP/1.0\r\n\r\n",
        statuses: &[200],
        origin: &["/public"],
    },
    Case {
        name: "underscore spellings of lb's fields",
        raw: "GET /public HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 6.6.6.6\r\nX_User_Id: root\r\n\r\n",
        statuses: &[200],
        origin: &["/public"],
    },
    Case {
        name: "two Authorization fields",
        raw: "GET /private HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n\r\n",
        statuses: &[400],
        origin: &[],
    },
    Case {
        name: "a Host port that is not a port",
        raw: "GET /public HTTP/1.1\r\nHost: a:junk\r\n\r\n",
        statuses: &[400],
        origin: &[],
    },
    Case {
        name: "empty lines first do not blind lb to CL+TE",
        raw: "\r\n\r\nGET /public HTTP/1.1\r\nHost: a\r\n\r\nPOST /public HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
        statuses: &[200, 400],
        origin: &["/public"],
    },
    Case {
        name: "an upgrade that did not happen does not blind lb to CL+TE",
        raw: "GET /public HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\nPOST /public HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
        statuses: &[200, 400],
        origin: &["/public"],
    },
    Case {
        name: "a folded field",
        raw: "GET /public HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n",
        statuses: &[400],
        origin: &[],
    },
    Case {
        name: "a space before the colon",
        raw: "GET /public HTTP/1.1\r\nHost : a\r\n\r\n",
        statuses: &[400],
        origin: &[],
    },
    Case {
        name: "an encoded NUL",
        raw: "GET /public%00.html HTTP/1.1\r\nHost: a\r\n\r\n",
        statuses: &[400],
        origin: &[],
    },
    Case {
        name: "a malformed chunk size is the client's fault",
        raw: "POST /public HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        statuses: &[400],
        origin: &[],
    },
];

/// What every request that reached the origin must be, whatever was sent.
fn sound(r: &Received) -> Result<(), String> {
    let t = r.target().to_ascii_lowercase();
    if t.starts_with("/admin") || t.starts_with("/secure") || t.starts_with("/private") {
        return Err(format!("a guarded route reached the origin: {}", r.head));
    }
    if r.fields("host").len() != 1 {
        return Err(format!("not exactly one Host: {}", r.head));
    }
    let lengths = r.fields("content-length").len();
    let chunked = !r.fields("transfer-encoding").is_empty();
    if lengths > 1 || (lengths == 1 && chunked) {
        return Err(format!("ambiguous framing: {}", r.head));
    }
    for hop in [
        "connection",
        "upgrade",
        "http2-settings",
        "x-user-id",
        "keep-alive",
    ] {
        if !r.fields(hop).is_empty() {
            return Err(format!("{hop} reached the origin: {}", r.head));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_smuggling_corpus_gets_nothing_past_either_path() {
    let origin = Origin::start().await;
    let config = http_site(origin.addr, "access_log = true", ROUTES);
    for (path, lb) in both_paths("smuggling", &config).await {
        let addr = lb.listener("web").await;
        for case in CASES {
            let before = origin.count();
            let got = responses(addr, case.raw.as_bytes(), case.statuses.len()).await;
            let statuses: Vec<u16> = got.iter().map(|(s, _, _)| *s).collect();
            assert_eq!(statuses, case.statuses, "{path}: {}", case.name);
            // Anything still on its way to the origin arrives before lb's answer did.
            let arrived = origin.since(before);
            let targets: Vec<&str> = arrived.iter().map(Received::target).collect();
            assert_eq!(targets, case.origin, "{path}: {}", case.name);
            for r in &arrived {
                sound(r).unwrap_or_else(|e| panic!("{path}: {}: {e}", case.name));
            }
            // Case by case, what the origin got is exactly what the client meant.
            match case.name {
                "Connection naming Content-Length keeps the body a body" => {
                    assert!(arrived[0].body.starts_with(b"GET /admin"), "{path}");
                    assert_eq!(arrived[0].field("content-length").as_deref(), Some("49"));
                }
                "Connection naming Host keeps the Host" => {
                    assert_eq!(arrived[0].field("host").as_deref(), Some("a"), "{path}");
                }
                "Connection naming Transfer-Encoding keeps the chunks" => {
                    assert_eq!(arrived[0].body, b"abc", "{path}");
                }
                "HTTP/1.0 without Host goes with lb's address as its Host" => {
                    assert_eq!(arrived[0].field("host"), Some(addr.to_string()), "{path}");
                }
                "underscore spellings of lb's fields" => {
                    assert!(arrived[0].fields("x_forwarded_for").is_empty(), "{path}");
                    assert!(arrived[0].fields("x_user_id").is_empty(), "{path}");
                    assert_eq!(
                        arrived[0].fields("x-forwarded-for"),
                        ["127.0.0.1"],
                        "{path}"
                    );
                }
                "the absolute form's authority is the Host" => {
                    assert_eq!(
                        arrived[0].field("host").as_deref(),
                        Some("a.example"),
                        "{path}"
                    );
                }
                "Connection cannot remove what a policy added" => {
                    assert_eq!(arrived[0].fields("x-added"), ["lb"], "{path}");
                }
                "a Content-Length body that looks like a request" => {
                    assert!(arrived[0].body.starts_with(b"GET /admin"), "{path}");
                }
                _ => {}
            }
        }
    }
    for r in origin.received() {
        sound(&r).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Three kinds of answers lb makes itself, on both paths: none names a backend's address or
/// an OS error (those go to the log).
#[tokio::test(flavor = "multi_thread")]
async fn lbs_own_errors_name_no_address() {
    let dead = Origin::start().await;
    let dead_addr = dead.addr;
    dead.kill();
    drop(dead);
    let config = format!(
        "[global]\nworkers = 1\n\n[admin]\nbind = \"127.0.0.1:0\"\n\n\
         [[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\nprotocol = \"http\"\npool = \"dead\"\n\n\
         [[pool]]\nname = \"dead\"\nbackends = [{{ addr = \"{dead_addr}\" }}]\n"
    );
    for (path, lb) in both_paths("own-errors", &config).await {
        let addr = lb.listener("web").await;
        let got = responses(addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 1).await;
        let (status, _, body) = &got[0];
        assert_eq!(*status, 502, "{path}: {body}");
        assert!(body.contains("\"status\":502"), "{path}: {body}");
        let port = dead_addr.port().to_string();
        for leak in ["127.0.0.1", port.as_str(), "refused", "os error"] {
            assert!(!body.contains(leak), "{path}: {leak:?} in {body}");
        }
    }
}
