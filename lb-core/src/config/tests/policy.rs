//! `[policy.NAME]` sections: each kind read, keys of other kinds and bad values reported.

use super::*;
use std::time::Duration;

const POLICIES: &str = r#"
[[listener]]
name = "api"
bind = "127.0.0.1:8080"
protocol = "http"

[[pool]]
name = "p"
backends = [{ addr = "127.0.0.1:9001" }]

[[route]]
listener = "api"
pool = "p"
policies = ["office", "keys", "per-key", "browser", "stamp"]

[policy.office]
kind = "ip_filter"
allow = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]
deny = ["10.6.0.0/16"]
trusted_proxies = ["127.0.0.1"]

[policy.keys]
kind = "api_key"
keys = [{ name = "mobile", sha256 = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b" }]
query = "api_key"

[policy.per-key]
kind = "rate_limit"
requests = 100
per = "1m"
burst = 20
key = "api_key"

[policy.browser]
kind = "cors"
allow_origins = ["https://app.example.com", "https://*.example.org"]
allow_methods = ["get", "POST"]
allow_credentials = true
max_age = "10m"

[policy.stamp]
kind = "headers"
request = { set = { "x-client" = "${client_ip}" }, remove = ["cookie"] }
response = { add = { "x-served-by" = "lb ${route}" } }
"#;

fn policy_error(text: &str, key: &str, needle: &str) {
    let errs = errors(text);
    let hit = errs
        .iter()
        .find(|d| d.key_path.as_deref() == Some(key))
        .unwrap_or_else(|| panic!("no error at {key}; got {errs:#?}"));
    assert!(
        hit.message.contains(needle) || hit.help.as_deref().is_some_and(|h| h.contains(needle)),
        "{hit:?} lacks {needle:?}"
    );
}

fn with(pattern: &str, replacement: &str) -> String {
    assert!(POLICIES.contains(pattern), "{pattern}");
    POLICIES.replacen(pattern, replacement, 1)
}

#[test]
fn every_kind_is_read() {
    let c = load_str("p.toml", POLICIES)
        .unwrap_or_else(|e| panic!("{e}"))
        .config;
    let names: Vec<&str> = c.policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["office", "keys", "per-key", "browser", "stamp"]);
    assert_eq!(c.routes[0].policies, [0, 1, 2, 3, 4]);
    match &c.policies[0].kind {
        PolicyKind::IpFilter {
            allow,
            deny,
            trusted_proxies,
        } => {
            assert_eq!((allow.len(), deny.len(), trusted_proxies.len()), (3, 1, 1));
            assert_eq!(allow[2].prefix, 32, "a bare address is a /32");
        }
        other => panic!("{other:?}"),
    }
    match &c.policies[1].kind {
        PolicyKind::ApiKey {
            keys,
            header,
            query,
            ..
        } => {
            assert_eq!(keys[0].0, "mobile");
            assert_eq!(keys[0].1[0], 0x2b);
            assert_eq!(
                (header.as_str(), query.as_deref()),
                ("x-api-key", Some("api_key"))
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        c.policies[2].kind,
        PolicyKind::RateLimit {
            requests: 100,
            per: Duration::from_secs(60),
            burst: 20,
            key: RateKey::ApiKey,
            max_keys: 100_000,
            store: RateStore::Local,
        }
    );
    match &c.policies[3].kind {
        PolicyKind::Cors {
            allow_methods,
            allow_credentials,
            max_age,
            ..
        } => {
            assert_eq!(allow_methods, &["GET", "POST"]);
            assert!(*allow_credentials);
            assert_eq!(*max_age, Some(Duration::from_secs(600)));
        }
        other => panic!("{other:?}"),
    }
    match &c.policies[4].kind {
        PolicyKind::Headers { request, response } => {
            assert_eq!(
                request.set,
                [("x-client".to_string(), "${client_ip}".to_string())]
            );
            assert_eq!(request.remove, ["cookie"]);
            assert_eq!(
                response.add,
                [("x-served-by".to_string(), "lb ${route}".to_string())]
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn policy_mistakes_are_reported_with_their_place() {
    policy_error(
        &with("kind = \"cors\"", "kind = \"corz\""),
        "policy.browser.kind",
        "did you mean \"cors\"",
    );
    policy_error(
        &with("kind = \"cors\"", "kind = \"oauth\""),
        "policy.browser.kind",
        "expected a policy kind",
    );
    policy_error(
        &with("burst = 20", "burst = 20\nallow = [\"10.0.0.0/8\"]"),
        "policy.per-key.allow",
        "does not apply to kind = \"rate_limit\"",
    );
    policy_error(
        &with("burst = 20", "burst = 20\nallwo = 1"),
        "policy.per-key.allwo",
        "unknown key",
    );
    policy_error(
        &with("\"10.6.0.0/16\"", "\"10.6.0.0/33\""),
        "policy.office.deny[0]",
        "expected an address or network",
    );
    policy_error(
        &with("sha256 = \"2bb8", "sha256 = \"zz"),
        "policy.keys.keys[0].sha256",
        "SHA-256",
    );
    policy_error(
        &with("requests = 100", "requests = 0"),
        "policy.per-key.requests",
        "from 1",
    );
    policy_error(
        &with("key = \"api_key\"", "key = \"jwt:\""),
        "policy.per-key.key",
        "claim name",
    );
    policy_error(
        &with("per = \"1m\"", "per = \"1m\"\nstore = \"redis\""),
        "policy.per-key.redis_url",
        "needs `redis_url`",
    );
    policy_error(
        &with(
            "per = \"1m\"",
            "per = \"1m\"\nstore = \"redis\"\nredis_url = \"http://x\"",
        ),
        "policy.per-key.redis_url",
        "redis://",
    );
    policy_error(
        &with("per = \"1m\"", "per = \"1m\"\nredis_url = \"redis://x:1\""),
        "policy.per-key.redis_url",
        "store = \"redis\" only",
    );
    policy_error(
        &with("per = \"1m\"", "per = \"1m\"\nstore = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\non_redis_error = \"panic\""),
        "policy.per-key.on_redis_error",
        "\"local\", \"allow\" or \"deny\"",
    );
    policy_error(
        &with("\"https://*.example.org\"", "\"example.org\""),
        "policy.browser.allow_origins[1]",
        "origin",
    );
    policy_error(
        &with(
            "\"https://app.example.com\", \"https://*.example.org\"",
            "\"*\"",
        ),
        "policy.browser.allow_credentials",
        "wildcard",
    );
    policy_error(
        &with("${route}", "${user}"),
        "policy.stamp.response.add.\"x-served-by\"",
        "unknown variable ${user}",
    );
    policy_error(
        &with("\"per-key\", \"browser\"", "\"per-key\", \"browsr\""),
        "route[0].policies[3]",
        "did you mean \"browser\"",
    );
}

#[test]
fn jwt_keys_and_algorithms_must_agree() {
    let jwt = |body: &str| {
        format!("{POLICIES}\n[[route]]\nlistener = \"api\"\nmatch = {{ path_prefix = \"/auth\" }}\npool = \"p\"\npolicies = [\"auth\"]\n[policy.auth]\nkind = \"jwt\"\n{body}")
    };
    policy_error(
        &jwt("algorithms = [\"none\"]\nsecret_env = \"S\"\n"),
        "policy.auth.algorithms[0]",
        "never accepted",
    );
    policy_error(
        &jwt("algorithms = [\"RS255\"]\nsecret_env = \"S\"\n"),
        "policy.auth.algorithms[0]",
        "expected one of",
    );
    policy_error(
        &jwt("algorithms = [\"RS256\"]\nsecret_env = \"S\"\n"),
        "policy.auth.algorithms",
        "HS256/384/512 only",
    );
    policy_error(
        &jwt("algorithms = [\"HS256\"]\njwks_file = \"k.json\"\n"),
        "policy.auth.algorithms",
        "signed with that public key",
    );
    policy_error(
        &jwt("algorithms = [\"RS256\", \"ES256\"]\npublic_key_file = \"k.pub\"\n"),
        "policy.auth.public_key_file",
        "one kind of key",
    );
    policy_error(
        &jwt("algorithms = [\"RS256\"]\n"),
        "policy.auth",
        "needs its key",
    );
    policy_error(
        &jwt("algorithms = [\"RS256\"]\npublic_key_file = \"k.pub\"\njwks_file = \"k.json\"\n"),
        "policy.auth.jwks_file",
        "second",
    );
    policy_error(
        &jwt("algorithms = [\"RS256\"]\npublic_key_file = \"k.pub\"\nallow = [\"10.0.0.0/8\"]\n"),
        "policy.auth.allow",
        "does not apply to kind = \"jwt\"",
    );
}

#[test]
fn basic_auth_takes_bcrypt_hashes_only() {
    let hash = "$2y$04$abcdefghijklmnopqrstuu5MDaG2mK2V2hGAn2cV9VyKkL2hJbPTq";
    assert_eq!(hash.len(), 60);
    let basic = |body: &str| {
        format!("{POLICIES}\n[[route]]\nlistener = \"api\"\nmatch = {{ path_prefix = \"/login\" }}\npool = \"p\"\npolicies = [\"login\"]\n[policy.login]\nkind = \"basic_auth\"\n{body}")
    };
    let ok = load_str(
        "p.toml",
        &basic(&format!(
            "users = {{ alice = \"{hash}\" }}\nrealm = \"staff\"\n"
        )),
    )
    .unwrap_or_else(|e| panic!("{e}"))
    .config;
    match &ok.policies[5].kind {
        PolicyKind::BasicAuth { users, realm, .. } => {
            assert_eq!((users.len(), realm.as_str()), (1, "staff"));
        }
        other => panic!("{other:?}"),
    }
    policy_error(
        &basic("users = { alice = \"wonderland\" }\n"),
        "policy.login.users.\"alice\"",
        "bcrypt",
    );
    policy_error(&basic("realm = \"x\"\n"), "policy.login", "needs `users`");
    policy_error(
        &basic(&format!("users = {{ \"a:b\" = \"{hash}\" }}\n")),
        "policy.login.users.\"a:b\"",
        "no ':'",
    );
}

#[test]
fn cache_policies_are_read_and_checked() {
    let cache = |body: &str| {
        format!("{POLICIES}\n[[route]]\nlistener = \"api\"\nmatch = {{ path_prefix = \"/c\" }}\npool = \"p\"\npolicies = [\"c\"]\n[policy.c]\nkind = \"cache\"\n{body}")
    };
    let c = load_str(
        "p.toml",
        &cache("ttl = \"10m\"\nvary = [\"Accept-Language\"]\nmax_size = \"8MiB\"\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"))
    .config;
    assert_eq!(
        c.policies[5].kind,
        PolicyKind::Cache {
            ttl: Duration::from_secs(600),
            vary: vec!["accept-language".into()],
            max_size: 8 << 20,
            max_object_size: 1 << 20,
            redis_url: None,
        }
    );
    policy_error(&cache("vary = []\n"), "policy.c.ttl", "needs `ttl`");
    policy_error(&cache("ttl = \"0s\"\n"), "policy.c.ttl", "greater than 0");
    policy_error(
        &cache("ttl = \"1m\"\nstore = \"redis\"\n"),
        "policy.c.redis_url",
        "needs `redis_url`",
    );
    policy_error(
        &cache("ttl = \"1m\"\nmax_size = \"1KiB\"\nmax_object_size = \"2KiB\"\n"),
        "policy.c.max_object_size",
        "larger than max_size",
    );
}

#[test]
fn transforms_need_something_to_do() {
    let t = |body: &str| {
        format!("{POLICIES}\n[[route]]\nlistener = \"api\"\nmatch = {{ path_prefix = \"/t\" }}\npool = \"p\"\npolicies = [\"t\"]\n[policy.t]\nkind = \"transform\"\n{body}")
    };
    let c = load_str(
        "p.toml",
        &t("xml_to_json = true\nmax_object_size = \"2MiB\"\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"))
    .config;
    assert_eq!(
        c.policies[5].kind,
        PolicyKind::Transform {
            xml_to_json: true,
            json_schema_file: None,
            max_object_size: 2 << 20
        }
    );
    policy_error(&t("xml_to_json = false\n"), "policy.t", "does nothing");
}
