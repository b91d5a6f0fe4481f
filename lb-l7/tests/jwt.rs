//! The `jwt` policy with tokens minted in the test: valid, expired, not yet valid, wrong
//! signature, `alg: none`, HS256 signed with the RSA public key, wrong issuer or audience,
//! missing role; keys from a PEM file, a JWKS (by `kid`), or an environment variable; claims
//! forwarded as headers and used as rate-limit keys; key problems caught when the config
//! loads.

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;
use support::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt");

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).expect("fixture")
}

fn rs256(claims: &serde_json::Value, kid: Option<&str>) -> String {
    let mut header = Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = kid.map(str::to_string);
    let key = EncodingKey::from_rsa_pem(&fixture("rsa.key")).expect("rsa key");
    encode(&header, claims, &key).expect("sign")
}

fn claims(extra: serde_json::Value) -> serde_json::Value {
    let mut c = json!({ "sub": "alice", "iss": "https://auth.example", "aud": "api", "exp": now() + 600, "roles": ["reader", "admin"] });
    if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    c
}

async fn gateway_with(policy: &str, more: &str) -> (std::net::SocketAddr, Backend) {
    let b = backend("b").await;
    let routes = format!(
        "[[route]]\nlistener = \"web\"\nname = \"api\"\npool = \"p0\"\npolicies = [\"auth\"{more}]\n[policy.auth]\nkind = \"jwt\"\n{policy}"
    );
    let (gw, _) = gateway(&config(&[(&[b.addr], "")], "", &routes)).await;
    (gw, b)
}

async fn call(gw: std::net::SocketAddr, token: Option<&str>) -> (u16, String, String) {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    raw(gw, &format!("GET /headers HTTP/1.1\r\nHost: h\r\n{auth}X-User-Id: mallory\r\nConnection: close\r\n\r\n")).await
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread")]
async fn rs256_tokens_get_exactly_the_status_they_deserve() {
    let policy = format!(
        "algorithms = [\"RS256\"]\npublic_key_file = \"{FIXTURES}/rsa.pub\"\nissuer = \"https://auth.example\"\naudience = \"api\"\nrequire_roles = [\"admin\"]\nforward_claims = {{ sub = \"x-user-id\" }}\n"
    );
    let (gw, b) = gateway_with(&policy, "").await;
    // Valid: through, with the verified subject forwarded and the client's claim replaced.
    let (s, _, body) = call(gw, Some(&rs256(&claims(json!({})), None))).await;
    assert_eq!(s, 200, "{body}");
    assert!(
        body.contains("x-user-id: alice") && !body.contains("mallory"),
        "{body}"
    );
    // No token: 401 with a bare Bearer challenge.
    let (s, head, _) = call(gw, None).await;
    assert_eq!(s, 401);
    assert!(head.contains("www-authenticate: Bearer"), "{head}");
    let invalid = |head: &str| head.contains("error=\"invalid_token\"");
    // Expired, not yet valid, wrong issuer, wrong audience.
    for bad in [
        json!({ "exp": now() - 60 }),
        json!({ "nbf": now() + 600 }),
        json!({ "iss": "https://evil.example" }),
        json!({ "aud": "other" }),
    ] {
        let (s, head, _) = call(gw, Some(&rs256(&claims(bad.clone()), None))).await;
        assert_eq!(s, 401, "{bad}");
        assert!(invalid(&head), "{bad}: {head}");
    }
    // A tampered payload breaks the signature.
    let good = rs256(&claims(json!({})), None);
    let parts: Vec<&str> = good.split('.').collect();
    let forged_payload = b64(claims(json!({ "sub": "root" })).to_string().as_bytes());
    let tampered = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
    assert_eq!(call(gw, Some(&tampered)).await.0, 401);
    // alg: none, with and without a signature part.
    let none_header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    for token in [
        format!("{none_header}.{}.", parts[1]),
        format!("{none_header}.{}", parts[1]),
    ] {
        let (s, head, _) = call(gw, Some(&token)).await;
        assert_eq!(s, 401, "alg none must never pass");
        assert!(invalid(&head));
    }
    // HS256 signed with the RSA public key as the HMAC secret (the classic confusion).
    let hs = encode(
        &Header::new(jsonwebtoken::Algorithm::HS256),
        &claims(json!({})),
        &EncodingKey::from_secret(&fixture("rsa.pub")),
    )
    .expect("sign");
    assert_eq!(call(gw, Some(&hs)).await.0, 401);
    // Valid but without the role: 403.
    let (s, head, _) = call(
        gw,
        Some(&rs256(&claims(json!({ "roles": ["reader"] })), None)),
    )
    .await;
    assert_eq!(s, 403);
    assert!(head.contains("insufficient_scope"), "{head}");
    assert_eq!(b.requests(), 1, "only the valid token reached the backend");
}

#[tokio::test(flavor = "multi_thread")]
async fn jwks_keys_are_picked_by_kid() {
    let policy = format!("algorithms = [\"RS256\"]\njwks_file = \"{FIXTURES}/jwks.json\"\n");
    let (gw, _) = gateway_with(&policy, "").await;
    assert_eq!(
        call(gw, Some(&rs256(&claims(json!({})), Some("rsa-1"))))
            .await
            .0,
        200
    );
    assert_eq!(
        call(gw, Some(&rs256(&claims(json!({})), Some("rsa-2"))))
            .await
            .0,
        401,
        "unknown kid"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ec_ed25519_and_hmac_keys_verify_their_algorithms() {
    let es = encode(
        &Header::new(jsonwebtoken::Algorithm::ES256),
        &claims(json!({})),
        &EncodingKey::from_ec_pem(&fixture("ec.key")).expect("ec"),
    )
    .expect("sign");
    let (gw, _) = gateway_with(
        &format!("algorithms = [\"ES256\"]\npublic_key_file = \"{FIXTURES}/ec.pub\"\n"),
        "",
    )
    .await;
    assert_eq!(call(gw, Some(&es)).await.0, 200);
    let ed = encode(
        &Header::new(jsonwebtoken::Algorithm::EdDSA),
        &claims(json!({})),
        &EncodingKey::from_ed_pem(&fixture("ed.key")).expect("ed"),
    )
    .expect("sign");
    let (gw, _) = gateway_with(
        &format!("algorithms = [\"EdDSA\"]\npublic_key_file = \"{FIXTURES}/ed.pub\"\n"),
        "",
    )
    .await;
    assert_eq!(call(gw, Some(&ed)).await.0, 200);
    assert_eq!(
        call(gw, Some(&es)).await.0,
        401,
        "an ES256 token against an Ed25519 key"
    );
    std::env::set_var("LB_TEST_JWT_SECRET", "hunter2-but-longer-than-that");
    let hs = encode(
        &Header::new(jsonwebtoken::Algorithm::HS384),
        &claims(json!({})),
        &EncodingKey::from_secret(b"hunter2-but-longer-than-that"),
    )
    .expect("sign");
    let (gw, _) = gateway_with(
        "algorithms = [\"HS384\"]\nsecret_env = \"LB_TEST_JWT_SECRET\"\n",
        "",
    )
    .await;
    assert_eq!(call(gw, Some(&hs)).await.0, 200);
    let wrong = encode(
        &Header::new(jsonwebtoken::Algorithm::HS384),
        &claims(json!({})),
        &EncodingKey::from_secret(b"guess"),
    )
    .expect("sign");
    assert_eq!(call(gw, Some(&wrong)).await.0, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn claims_key_rate_limits_and_fill_header_templates() {
    let policy = format!(
        "algorithms = [\"RS256\"]\npublic_key_file = \"{FIXTURES}/rsa.pub\"\n\
         [policy.per-user]\nkind = \"rate_limit\"\nrequests = 1\nper = \"1m\"\nkey = \"jwt:sub\"\n\
         [policy.stamp]\nkind = \"headers\"\nrequest = {{ set = {{ \"x-who\" = \"${{jwt.sub}} via ${{route}}\" }} }}\n"
    );
    let (gw, _) = gateway_with(&policy, ", \"per-user\", \"stamp\"").await;
    let (s, _, body) = call(gw, Some(&rs256(&claims(json!({})), None))).await;
    assert_eq!(s, 200);
    assert!(body.contains("x-who: alice via api"), "{body}");
    assert_eq!(
        call(gw, Some(&rs256(&claims(json!({})), None))).await.0,
        429,
        "alice's one request is spent"
    );
    assert_eq!(
        call(gw, Some(&rs256(&claims(json!({ "sub": "bob" })), None)))
            .await
            .0,
        200,
        "bob has his own"
    );
}

#[test]
fn key_problems_fail_the_config_load_naming_the_file() {
    let base = "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:1\"\nprotocol = \"http\"\npool = \"p\"\n[[pool]]\nname = \"p\"\nbackends = [{ addr = \"127.0.0.1:2\" }]\n[[route]]\nlistener = \"web\"\npool = \"p\"\npolicies = [\"auth\"]\n[policy.auth]\nkind = \"jwt\"\n";
    let cases = [
        (
            "algorithms = [\"HS256\"]\nsecret_env = \"LB_TEST_NO_SUCH_VARIABLE\"\n".to_string(),
            "LB_TEST_NO_SUCH_VARIABLE is not set",
        ),
        (
            "algorithms = [\"RS256\"]\npublic_key_file = \"/nonexistent/key.pub\"\n".to_string(),
            "/nonexistent/key.pub: cannot read",
        ),
        (
            format!("algorithms = [\"RS256\"]\npublic_key_file = \"{FIXTURES}/README.md\"\n"),
            "not a RS256 public key",
        ),
        (
            format!("algorithms = [\"RS256\"]\njwks_file = \"{FIXTURES}/rsa.pub\"\n"),
            "not a JSON Web Key Set",
        ),
        (
            format!("algorithms = [\"HS256\"]\npublic_key_file = \"{FIXTURES}/rsa.pub\"\n"),
            "would accept tokens signed with that public key",
        ),
        (
            "algorithms = [\"none\"]\nsecret_env = \"X\"\n".to_string(),
            "never accepted",
        ),
    ];
    for (policy, needle) in cases {
        let text = format!("{base}{policy}");
        let err = lb_l7::gateway::load_str("jwt.toml", &text).expect_err(needle);
        let rendered = err.to_string();
        assert!(rendered.contains(needle), "{needle:?} not in:\n{rendered}");
        assert!(
            rendered.contains("jwt.toml:"),
            "the error names the config place:\n{rendered}"
        );
    }
}

/// An RS256 token with `header` as its header's JSON, signed as it stands.
fn rs256_with_header(header: &serde_json::Value, claims: &serde_json::Value) -> String {
    let key = EncodingKey::from_rsa_pem(&fixture("rsa.key")).expect("rsa key");
    let message = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &key, jsonwebtoken::Algorithm::RS256)
            .expect("sign");
    format!("{message}.{signature}")
}

fn strict_policy() -> String {
    format!(
        "algorithms = [\"RS256\"]\npublic_key_file = \"{FIXTURES}/rsa.pub\"\nissuer = \"https://auth.example\"\naudience = \"api\"\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_configured_issuer_or_audience_must_be_in_the_token() {
    let (gw, b) = gateway_with(&strict_policy(), "").await;
    let without = |claim: &str| {
        let mut c = claims(json!({}));
        c.as_object_mut().expect("object").remove(claim);
        c
    };
    // Each must be refused: missing, null, empty, of the wrong type, or an issuer list that
    // smuggles the right one in beside another.
    let refused = [
        ("no iss", without("iss")),
        ("no aud", without("aud")),
        ("iss null", claims(json!({ "iss": null }))),
        ("iss empty", claims(json!({ "iss": "" }))),
        ("iss number", claims(json!({ "iss": 7 }))),
        (
            "iss list",
            claims(json!({ "iss": ["https://auth.example", "https://evil.example"] })),
        ),
        ("aud null", claims(json!({ "aud": null }))),
        ("aud empty", claims(json!({ "aud": "" }))),
        (
            "aud list without it",
            claims(json!({ "aud": ["other", "Api"] })),
        ),
        ("aud empty list", claims(json!({ "aud": [] }))),
    ];
    for (what, c) in refused {
        let (s, head, _) = call(gw, Some(&rs256(&c, None))).await;
        assert_eq!(s, 401, "{what}");
        assert!(head.contains("error=\"invalid_token\""), "{what}: {head}");
    }
    // A list of audiences holding ours is what RFC 7519 §4.1.3 allows.
    let listed = claims(json!({ "aud": ["other", "api"] }));
    assert_eq!(call(gw, Some(&rs256(&listed, None))).await.0, 200);
    assert_eq!(
        b.requests(),
        1,
        "only the listed audience reached the backend"
    );
    // Without issuer or audience configured, tokens without them still pass.
    let (gw, _) = gateway_with(
        &format!("algorithms = [\"RS256\"]\npublic_key_file = \"{FIXTURES}/rsa.pub\"\n"),
        "",
    )
    .await;
    let bare = json!({ "sub": "alice", "exp": now() + 600 });
    assert_eq!(call(gw, Some(&rs256(&bare, None))).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_naming_critical_extensions_is_refused() {
    let (gw, b) = gateway_with(&strict_policy(), "").await;
    let good = claims(json!({}));
    // The same header without crit passes: the refusals below are crit's alone.
    let plain = json!({ "alg": "RS256", "typ": "JWT" });
    assert_eq!(
        call(gw, Some(&rs256_with_header(&plain, &good))).await.0,
        200
    );
    // RFC 7515 §4.1.11: an extension lb does not understand, and the invalid forms (empty,
    // not a list, null, names of registered members), and crit spelt with a JSON escape.
    let crits = [
        json!({ "alg": "RS256", "crit": ["exp"], "exp": 1 }),
        json!({ "alg": "RS256", "crit": ["b64"], "b64": false }),
        json!({ "alg": "RS256", "crit": [] }),
        json!({ "alg": "RS256", "crit": "exp" }),
        json!({ "alg": "RS256", "crit": null }),
        json!({ "alg": "RS256", "crit": ["alg"] }),
    ];
    for header in crits {
        let (s, head, _) = call(gw, Some(&rs256_with_header(&header, &good))).await;
        assert_eq!(s, 401, "{header}");
        assert!(head.contains("invalid_token"), "{header}: {head}");
    }
    let escaped = r#"{"alg":"RS256","cr\u0069t":["x"],"x":1}"#;
    let key = EncodingKey::from_rsa_pem(&fixture("rsa.key")).expect("rsa key");
    let message = format!(
        "{}.{}",
        b64(escaped.as_bytes()),
        b64(good.to_string().as_bytes())
    );
    let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &key, jsonwebtoken::Algorithm::RS256)
        .expect("sign");
    assert_eq!(
        call(gw, Some(&format!("{message}.{sig}"))).await.0,
        401,
        "escaped crit"
    );
    assert_eq!(
        b.requests(),
        1,
        "only the token without crit reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claim_that_makes_no_header_value_drops_the_clients_copy() {
    let policy = format!(
        "algorithms = [\"RS256\"]\npublic_key_file = \"{FIXTURES}/rsa.pub\"\n\
         [policy.stamp]\nkind = \"headers\"\nrequest = {{ set = {{ \"x-user-name\" = \"${{jwt.name}}\" }}, add = {{ \"x-user-tag\" = \"${{jwt.name}}\" }} }}\n"
    );
    let (gw, _) = gateway_with(&policy, ", \"stamp\"").await;
    let send = |name: &str| {
        let token = rs256(&claims(json!({ "name": name })), None);
        format!("GET /headers HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer {token}\r\nX-User-Name: mallory\r\nX-User-Tag: mallory\r\nConnection: close\r\n\r\n")
    };
    let (s, _, body) = raw(gw, &send("alice")).await;
    assert_eq!(s, 200, "{body}");
    assert!(
        body.contains("x-user-name: alice") && body.contains("x-user-tag: alice"),
        "{body}"
    );
    // A line break, a NUL, a DEL: no valid value, so neither the client's copy nor anything
    // else under those names reaches the backend.
    for name in ["eve\r\nx-admin: 1", "eve\u{0}", "\u{7f}"] {
        let (s, _, body) = raw(gw, &send(name)).await;
        assert_eq!(s, 200, "{name:?}: {body}");
        assert!(!body.contains("mallory"), "{name:?}: {body}");
        assert!(
            !body.contains("x-user-name") && !body.contains("x-admin"),
            "{name:?}: {body}"
        );
    }
}

/// Through the gateway, once a token is remembered: every one-character forgery of its
/// signature, its claims re-signed by a stranger, and a copy with another `sub` under the
/// genuine signature are still refused after the hit; the genuine token keeps
/// passing with its own forwarded claim (and never the client's).
#[tokio::test(flavor = "multi_thread")]
async fn a_remembered_token_lets_no_near_copy_through() {
    let policy = format!(
        "algorithms = [\"RS256\"]\npublic_key_file = \"{FIXTURES}/rsa.pub\"\nforward_claims = {{ sub = \"x-user-id\" }}\n"
    );
    let (gw, _) = gateway_with(&policy, "").await;
    let good = rs256(&claims(json!({})), None);
    for _ in 0..2 {
        let (s, _, body) = call(gw, Some(&good)).await;
        assert_eq!(s, 200, "{body}");
        assert!(
            body.contains("x-user-id: alice") && !body.contains("mallory"),
            "{body}"
        );
    }
    let (message, sig) = good.rsplit_once('.').expect("three parts");
    let mut forged: Vec<String> = (0..sig.len())
        .step_by(7)
        .map(|i| {
            let mut b = sig.as_bytes().to_vec();
            b[i] = if b[i] == b'x' { b'y' } else { b'x' };
            format!("{message}.{}", String::from_utf8(b).expect("ascii"))
        })
        .collect();
    let other = rs256(&claims(json!({ "sub": "root" })), None);
    let (other_message, _) = other.rsplit_once('.').expect("three parts");
    forged.push(format!("{other_message}.{sig}"));
    // The same claims, signed HS256 by someone holding no key of the policy's.
    let (_, payload) = message.split_once('.').expect("three parts");
    let head = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
    let stranger = jsonwebtoken::crypto::sign(
        format!("{head}.{payload}").as_bytes(),
        &EncodingKey::from_secret(b"a-secret-that-is-not-the-key"),
        jsonwebtoken::Algorithm::HS256,
    )
    .expect("sign");
    forged.push(format!("{head}.{payload}.{stranger}"));
    for token in &forged {
        let (s, head, body) = call(gw, Some(token)).await;
        assert_eq!(s, 401, "{token}: {head}{body}");
    }
    let (s, _, body) = call(gw, Some(&good)).await;
    assert_eq!(s, 200, "{body}");
}
