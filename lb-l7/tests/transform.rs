//! The `transform` policy: backend XML answers turned into JSON, JSON request bodies checked
//! against a schema (400 with where and why), and schema problems caught when the config loads.

mod support;

use support::*;

fn schema_file(tag: &str, schema: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lb-schema-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("schema.json");
    std::fs::write(&path, schema).expect("write");
    path
}

async fn transformed(b: &Backend, policy: &str) -> std::net::SocketAddr {
    let routes = format!("[[route]]\nlistener = \"web\"\npool = \"p0\"\npolicies = [\"t\"]\n[policy.t]\nkind = \"transform\"\n{policy}");
    gateway(&config(&[(&[b.addr], "")], "", &routes)).await.0
}

#[tokio::test(flavor = "multi_thread")]
async fn xml_answers_become_json() {
    let b = backend("b").await;
    let gw = transformed(&b, "xml_to_json = true\n").await;
    let (s, head, body) = raw(gw, &get("h", "/xml")).await;
    assert_eq!(s, 200, "{body}");
    assert!(head.contains("content-type: application/json"), "{head}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        v,
        serde_json::json!({ "order": { "@id": "7", "item": ["a", "b & c"] } })
    );
    let (s, _, body) = raw(gw, &get("h", "/badxml")).await;
    assert_eq!(s, 502, "{body}");
    assert!(body.contains("XML could not be turned into JSON"), "{body}");
    // Other answers pass untouched.
    let (s, _, body) = raw(gw, &get("h", "/plain")).await;
    assert_eq!(s, 200);
    assert!(body.starts_with("b GET /plain"), "{body}");
}

const ORDER: &str = r#"{
  "type": "object",
  "required": ["item", "qty"],
  "additionalProperties": false,
  "properties": {
    "item": { "type": "string", "minLength": 1 },
    "qty": { "type": "integer", "minimum": 1 }
  }
}"#;

fn post_json(body: &str, content_type: &str) -> String {
    format!(
        "POST /count HTTP/1.1\r\nHost: h\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn json_bodies_are_checked_against_the_schema() {
    let b = backend("b").await;
    let schema = schema_file("ok", ORDER);
    let gw = transformed(
        &b,
        &format!("json_schema_file = \"{}\"\n", schema.display()),
    )
    .await;
    let good = r#"{"item":"apple","qty":3}"#;
    let (s, _, body) = raw(gw, &post_json(good, "application/json")).await;
    assert_eq!(
        (s, body.as_str()),
        (200, good.len().to_string().as_str()),
        "the whole body reaches the backend"
    );
    for (doc, want) in [
        (
            r#"{"item":"apple"}"#,
            "the property \\\"qty\\\" is required",
        ),
        (
            r#"{"item":"apple","qty":0}"#,
            "/qty: 0 is below the minimum 1",
        ),
        (
            r#"{"item":"apple","qty":1,"x":1}"#,
            "/x: the property \\\"x\\\" is not allowed",
        ),
        (r#"{"item":"#, "the body is not JSON"),
    ] {
        let (s, _, body) = raw(gw, &post_json(doc, "application/json")).await;
        assert_eq!(s, 400, "{doc}: {body}");
        assert!(body.contains(want), "{doc}: {body}");
    }
    let (s, _, body) = raw(
        gw,
        &post_json("item=apple", "application/x-www-form-urlencoded"),
    )
    .await;
    assert_eq!(s, 400, "{body}");
    // A GET without a body is not checked.
    assert_eq!(raw(gw, &get("h", "/plain")).await.0, 200);
    assert_eq!(b.requests(), 2, "refused bodies never reach the backend");
}

#[test]
fn schema_problems_fail_the_config_load() {
    let base = "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:1\"\nprotocol = \"http\"\npool = \"p\"\n[[pool]]\nname = \"p\"\nbackends = [{ addr = \"127.0.0.1:2\" }]\n[[route]]\nlistener = \"web\"\npool = \"p\"\npolicies = [\"t\"]\n[policy.t]\nkind = \"transform\"\n";
    let unknown = schema_file("unknown", r#"{ "type": "string", "contentSchema": {} }"#);
    let not_json = schema_file("notjson", "{ type: string }");
    for (path, needle) in [
        (unknown, "keyword \"contentSchema\" is not supported"),
        (not_json, "not JSON"),
        (
            std::path::PathBuf::from("/nonexistent/schema.json"),
            "cannot read",
        ),
    ] {
        let text = format!("{base}json_schema_file = \"{}\"\n", path.display());
        let err = lb_l7::gateway::load_str("t.toml", &text).expect_err(needle);
        assert!(err.to_string().contains(needle), "{needle:?} not in {err}");
    }
}
