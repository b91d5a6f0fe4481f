//! Validator tests: one per bad-input case of SPEC §4, plus the happy path.

use super::*;

const GOOD: &str = r#"
[global]
workers = 2
max_connections = 500
shutdown_timeout = "10s"

[admin]
bind = "127.0.0.1:9900"
token = "t"

[[listener]]
name = "web"
bind = "127.0.0.1:8080"
pool = "web"
idle_timeout = "1m"
access_log = true

[[pool]]
name = "web"
algorithm = "weighted-round-robin"
backends = [
  { addr = "10.0.0.1:80", weight = 2 },
  { addr = "[::1]:81" },
  { addr = "10.0.0.3:80", backup = true },
]
health = { kind = "http", path = "/healthz", expect_status = 204, interval = "500ms", rise = 1, fall = 2 }
passive = { consecutive_failures = 3, eject_for = "10s" }
slow_start = "5s"
"#;

fn errors(text: &str) -> Vec<Diagnostic> {
    match load_str("t.toml", text) {
        Ok(l) => panic!("config should be rejected; warnings: {:?}", l.warnings),
        Err(e) => e.diagnostics.into_iter().filter(|d| d.is_error()).collect(),
    }
}

fn one_error(text: &str, key: &str, needle: &str) -> Diagnostic {
    error_at(&errors(text), key, needle)
}

/// The first of `errs` at `key` whose message holds `needle`.
fn error_at(errs: &[Diagnostic], key: &str, needle: &str) -> Diagnostic {
    errs.iter()
        .find(|d| d.key_path.as_deref() == Some(key) && d.message.contains(needle))
        .unwrap_or_else(|| panic!("no error at {key} saying {needle:?}; got {errs:#?}"))
        .clone()
}

/// The model by validation alone (no TLS files read), or its errors.
fn validated(text: &str) -> Result<Config, Vec<Diagnostic>> {
    let mut d = Vec::new();
    let raw = crate::config::parse::parse(text, &mut d);
    match crate::config::validate::validate(raw, &mut d) {
        Some(c) if !d.iter().any(Diagnostic::is_error) => Ok(c),
        _ => Err(d.into_iter().filter(Diagnostic::is_error).collect()),
    }
}

/// `text` fails validation at `key` with a message holding `needle`, pointing at its place.
fn refused_at(text: &str, key: &str, needle: &str) {
    let errs = validated(text).expect_err("config should be rejected");
    let hit = error_at(&errs, key, needle);
    assert!(hit.span.is_some(), "{hit:?} points nowhere");
}

fn with(pattern: &str, replacement: &str) -> String {
    assert!(GOOD.contains(pattern), "{pattern}");
    GOOD.replacen(pattern, replacement, 1)
}

#[test]
fn good_config_loads_with_typed_values() {
    let l = load_str("t.toml", GOOD).expect("valid");
    let c = &l.config;
    assert_eq!(c.global.workers, 2);
    assert_eq!(
        c.global.shutdown_timeout,
        std::time::Duration::from_secs(10)
    );
    assert_eq!(
        c.global.shutdown_delay,
        std::time::Duration::ZERO,
        "default"
    );
    let delayed = load_str(
        "t.toml",
        &with(
            "shutdown_timeout",
            "shutdown_delay = \"3s\"\nshutdown_timeout",
        ),
    )
    .expect("valid");
    assert_eq!(
        delayed.config.global.shutdown_delay,
        std::time::Duration::from_secs(3)
    );
    assert_eq!(c.admin.as_ref().map(|a| a.bind.port()), Some(9900));
    assert_eq!(c.listeners[0].pool, Some(0));
    assert_eq!(c.listeners[0].idle_timeout.as_secs(), 60);
    assert_eq!(c.listeners[0].connect_timeout.as_secs(), 3);
    let p = &c.pools[0];
    assert_eq!(p.algorithm, Algorithm::WeightedRoundRobin);
    assert_eq!(p.backends.len(), 3);
    assert_eq!(p.backends[0].weight.get(), 2);
    assert!(p.backends[2].backup());
    assert_eq!(
        p.health.as_ref().map(|h| (&h.kind, h.fall)),
        Some((
            &HealthKind::Http {
                path: "/healthz".into(),
                expect_status: 204
            },
            2
        ))
    );
    assert!(l.hash.starts_with("sha256:"));
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
}

#[test]
fn unknown_keys_are_errors_with_hints() {
    let d = one_error(
        &with("access_log", "acess_log"),
        "listener[0].acess_log",
        "unknown key",
    );
    assert_eq!(d.help.as_deref(), Some("did you mean `access_log`?"));
}

#[test]
fn duplicate_names() {
    let text =
        format!("{GOOD}\n[[pool]]\nname = \"web\"\nbackends = [{{ addr = \"10.0.0.9:80\" }}]\n");
    one_error(&text, "pool[1].name", "duplicate pool name");
    let text = format!(
        "{GOOD}\n[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:8081\"\npool = \"web\"\n"
    );
    one_error(&text, "listener[1].name", "duplicate listener name");
}

#[test]
fn listener_pointing_at_missing_pool() {
    let d = one_error(
        &with("pool = \"web\"", "pool = \"wbe\""),
        "listener[0].pool",
        "does not exist",
    );
    assert_eq!(d.help.as_deref(), Some("did you mean \"web\"?"));
}

#[test]
fn invalid_addresses() {
    let d = one_error(
        &with("10.0.0.1:80", "10.0.0.1"),
        "pool[0].backends[0].addr",
        "expected IP:PORT",
    );
    assert_eq!(d.help.as_deref(), Some("add a port, e.g. \"10.0.0.1:80\""));
    one_error(
        &with("[::1]:81", "::1:81"),
        "pool[0].backends[1].addr",
        "expected IP:PORT",
    );
    one_error(
        &with("127.0.0.1:8080", "localhost:8080"),
        "listener[0].bind",
        "expected IP:PORT",
    );
    one_error(
        &with("127.0.0.1:9900", "127.0.0.1:99999"),
        "admin.bind",
        "expected IP:PORT",
    );
}

#[test]
fn duplicate_bind_addresses() {
    let text =
        format!("{GOOD}\n[[listener]]\nname = \"two\"\nbind = \"0.0.0.0:8080\"\npool = \"web\"\n");
    one_error(&text, "listener[1].bind", "duplicate bind address");
    one_error(
        &with("127.0.0.1:8080", "127.0.0.1:9900"),
        "listener[0].bind",
        "duplicate bind address",
    );
}

#[test]
fn zero_and_negative_weights() {
    one_error(
        &with("weight = 2", "weight = 0"),
        "pool[0].backends[0].weight",
        "expected a weight",
    );
    one_error(
        &with("weight = 2", "weight = -3"),
        "pool[0].backends[0].weight",
        "found -3",
    );
}

#[test]
fn hash_key_on_non_hash_algorithm() {
    one_error(
        &with(
            "slow_start = \"5s\"",
            "slow_start = \"5s\"\nhash_key = \"source-ip\"",
        ),
        "pool[0].hash_key",
        "applies only to algorithm = \"consistent-hash\"",
    );
}

#[test]
fn unsupported_listener_keys_are_refused_not_ignored() {
    // TLS / PROXY / UDP keys on a tcp listener must never be silently dropped.
    one_error(
        &with("access_log = true", "udp_session_timeout = \"30s\""),
        "listener[0].udp_session_timeout",
        "only to protocol = \"udp\"",
    );
    one_error(
        &with("access_log = true", "proxy_protocol = \"v3\""),
        "listener[0].proxy_protocol",
        "expected \"v1\" or \"v2\"",
    );
    one_error(
        &with("access_log = true", "protocol = \"htp\""),
        "listener[0].protocol",
        "expected one of",
    );
}

#[test]
fn durations_that_do_not_parse() {
    let d = one_error(
        &with("\"1m\"", "\"1 minute\""),
        "listener[0].idle_timeout",
        "expected a duration",
    );
    assert!(d.span.is_some());
    one_error(
        &with("\"10s\"", "\"10\""),
        "global.shutdown_timeout",
        "needs a unit",
    );
    one_error(
        &with(
            "shutdown_timeout",
            "shutdown_delay = \"soon\"\nshutdown_timeout",
        ),
        "global.shutdown_delay",
        "expected a duration",
    );
    one_error(
        &with("\"500ms\"", "\"fast\""),
        "pool[0].health.interval",
        "expected a duration",
    );
}

#[test]
fn type_mismatch_names_expected_and_found() {
    let d = one_error(
        &with("workers = 2", "workers = \"two\""),
        "global.workers",
        "expected an integer",
    );
    assert!(d.message.contains("string"), "{}", d.message);
}

#[test]
fn all_errors_reported_not_just_the_first() {
    let text = GOOD
        .replace("weight = 2", "weight = 0")
        .replace("\"1m\"", "\"soon\"")
        .replace(
            "algorithm = \"weighted-round-robin\"",
            "algorithm = \"weighted-round-robbin\"",
        )
        .replace("access_log", "acces_log");
    let errs = errors(&text);
    let keys: Vec<_> = errs.iter().filter_map(|d| d.key_path.as_deref()).collect();
    for k in [
        "pool[0].backends[0].weight",
        "listener[0].idle_timeout",
        "pool[0].algorithm",
        "listener[0].acces_log",
    ] {
        assert!(keys.contains(&k), "missing {k} in {keys:?}");
    }
}

#[test]
fn rendered_error_shows_file_line_column_and_line() {
    let text = with("10.0.0.1:80", "10.0.0.1");
    let e = load_str("conf/web.toml", &text).expect_err("invalid");
    let out = e.to_string();
    let line = text
        .lines()
        .position(|l| l.contains("\"10.0.0.1\""))
        .expect("line")
        + 1;
    let col = text
        .lines()
        .nth(line - 1)
        .and_then(|l| l.find("\"10.0.0.1\""))
        .expect("col")
        + 1;
    assert!(
        out.contains(&format!("--> conf/web.toml:{line}:{col}")),
        "{out}"
    );
    assert!(
        out.contains("{ addr = \"10.0.0.1\", weight = 2 },"),
        "{out}"
    );
    assert!(out.contains("= key: pool[0].backends[0].addr"), "{out}");
    assert!(
        out.ends_with("1 error found; the config was not used"),
        "{out}"
    );
}

#[test]
fn warnings_do_not_reject() {
    let text =
        format!("{GOOD}\n[[pool]]\nname = \"spare\"\nbackends = [{{ addr = \"10.0.0.9:80\" }}]\n");
    let l = load_str("t.toml", &text).expect("warnings only");
    assert!(l
        .warnings
        .iter()
        .any(|w| w.message.contains("not used by any listener")));
}

#[test]
fn empty_pool_and_no_listener() {
    one_error(&with("backends = [\n  { addr = \"10.0.0.1:80\", weight = 2 },\n  { addr = \"[::1]:81\" },\n  { addr = \"10.0.0.3:80\", backup = true },\n]", "backends = []"), "pool[0].backends", "no backends");
    let errs = errors("[[pool]]\nname = \"p\"\nbackends = [{ addr = \"127.0.0.1:1\" }]\n");
    assert!(errs.iter().any(|d| d.message.contains("no [[listener]]")));
}

mod age;
mod aggregate;
mod graphql;
mod http;
mod kinds;
mod oauth2;
mod policy;
mod priority;
mod transcode;

mod prop {
    use super::super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// The validator never panics, whatever the text.
        #[test]
        fn never_panics_on_arbitrary_text(s in "\\PC{0,200}") {
            let _ = load_str("fuzz.toml", &s);
        }

        /// Nor on structurally plausible configs with random values.
        #[test]
        fn never_panics_on_random_values(
            w in any::<i64>(), port in any::<u32>(), dur in "[0-9a-z ]{0,6}", alg in "[a-z-]{0,22}"
        ) {
            let text = format!(
                "[[listener]]\nname=\"l\"\nbind=\"127.0.0.1:{port}\"\npool=\"p\"\nidle_timeout=\"{dur}\"\n[[pool]]\nname=\"p\"\nalgorithm=\"{alg}\"\nbackends=[{{addr=\"127.0.0.1:1\",weight={w}}}]\n"
            );
            if let Err(e) = load_str("p.toml", &text) {
                // Every error renders and names a place.
                for d in e.diagnostics.iter().filter(|d| d.is_error()) {
                    prop_assert!(d.span.is_some() || d.key_path.is_some());
                    let _ = d.render(&e.source);
                }
            }
        }
    }
}

#[test]
fn udp_listeners_and_udp_health() {
    let text = GOOD
        .replace("idle_timeout = \"1m\"", "protocol = \"udp\"\nudp_session_timeout = \"10s\"")
        .replace(
            "health = { kind = \"http\", path = \"/healthz\", expect_status = 204, interval = \"500ms\", rise = 1, fall = 2 }",
            "health = { kind = \"udp\", send = \"hex:70696e67\", expect = \"pong\" }",
        );
    let l = load_str("t.toml", &text).expect("udp config is valid");
    assert_eq!(l.config.listeners[0].protocol, Protocol::Udp);
    assert_eq!(l.config.listeners[0].udp_session_timeout.as_secs(), 10);
    assert_eq!(
        l.config.pools[0].health.as_ref().map(|h| h.kind.clone()),
        Some(HealthKind::Udp {
            send: b"ping".to_vec(),
            expect: b"pong".to_vec()
        })
    );
    // A TCP and a UDP listener may share a port number.
    let both = format!(
        "{text}\n[[listener]]\nname = \"tcp-twin\"\nbind = \"127.0.0.1:8080\"\npool = \"twin\"\n\
         [[pool]]\nname = \"twin\"\nbackends = [{{ addr = \"10.0.0.9:80\" }}]\n"
    );
    assert!(load_str("t.toml", &both).is_ok());
    // But not a pool: its udp health check would probe a tcp listener's backends over UDP.
    let shared = format!(
        "{text}\n[[listener]]\nname = \"tcp-twin\"\nbind = \"127.0.0.1:8080\"\npool = \"web\"\n"
    );
    one_error(&shared, "pool[0].health.kind", "wrong transport");
    // udp health needs send and expect; dns needs a valid name; keys of other kinds are refused.
    let no_expect = text.replace(", expect = \"pong\"", "");
    one_error(&no_expect, "pool[0].health.expect", "needs `expect`");
    let dns_bad = text.replace(
        "kind = \"udp\", send = \"hex:70696e67\", expect = \"pong\"",
        "kind = \"dns\", query = \"a..b\"",
    );
    one_error(&dns_bad, "pool[0].health.query", "not a DNS name");
    let mixed = text.replace(
        "expect = \"pong\"",
        "expect = \"pong\", query = \"x.example\"",
    );
    one_error(
        &mixed,
        "pool[0].health.query",
        "applies only to kind = \"dns\"",
    );
    let bad_hex = text.replace("hex:70696e67", "hex:7g");
    one_error(&bad_hex, "pool[0].health.send", "hex");
}

/// A certificate, its key, and a second key that is not its, written to a temp directory.
struct TlsFiles {
    dir: std::path::PathBuf,
}

impl TlsFiles {
    fn new(tag: &str, not_after: (i32, u8, u8)) -> Self {
        let dir = std::env::temp_dir().join(format!("lb-config-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["a.example".into()]).expect("params");
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let cert = params.self_signed(&key).expect("cert");
        let other = rcgen::KeyPair::generate().expect("other key");
        std::fs::write(dir.join("cert.pem"), cert.pem()).expect("write");
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write");
        std::fs::write(dir.join("other.pem"), other.serialize_pem()).expect("write");
        std::fs::write(dir.join("junk.pem"), "not pem at all\n").expect("write");
        Self { dir }
    }

    fn path(&self, f: &str) -> String {
        self.dir.join(f).display().to_string()
    }

    fn tls(&self, cert: &str, key: &str) -> String {
        format!(
            "tls = {{ cert = \"{}\", key = \"{}\", alpn = [\"h2\", \"http/1.1\"] }}",
            self.path(cert),
            self.path(key)
        )
    }
}

impl Drop for TlsFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn tls_files_are_read_and_checked_at_load() {
    let f = TlsFiles::new("check", (2099, 1, 1));
    let ok = load_str(
        "t.toml",
        &with("access_log = true", &f.tls("cert.pem", "key.pem")),
    )
    .expect("a matching pair loads");
    assert!(ok.tls.listeners[0].is_some());
    assert!(ok.warnings.is_empty(), "{:?}", ok.warnings);

    let d = one_error(
        &with("access_log = true", &f.tls("cert.pem", "other.pem")),
        "listener[0].tls.key",
        "does not match the certificate",
    );
    assert!(d.message.contains("other.pem"), "{}", d.message);
    let d = one_error(
        &with("access_log = true", &f.tls("missing.pem", "key.pem")),
        "listener[0].tls.cert",
        "cannot read certificate file",
    );
    assert!(d.message.contains("missing.pem"), "{}", d.message);
    one_error(
        &with("access_log = true", &f.tls("junk.pem", "key.pem")),
        "listener[0].tls.cert",
        "holds no PEM certificate",
    );
    one_error(
        &with("access_log = true", &f.tls("cert.pem", "junk.pem")),
        "listener[0].tls.key",
        "no usable private key",
    );
}

#[test]
fn an_expired_certificate_is_a_warning() {
    let f = TlsFiles::new("expired", (2021, 1, 1));
    let l = load_str(
        "t.toml",
        &with("access_log = true", &f.tls("cert.pem", "key.pem")),
    )
    .expect("expired still loads");
    assert!(
        l.warnings
            .iter()
            .any(|w| w.message.contains("expired on 2021-01-01")),
        "{:?}",
        l.warnings
    );
}

#[test]
fn tls_routing_and_proxy_keys_are_checked() {
    let c = load_str(
        "t.toml",
        &with(
            "access_log = true",
            "proxy_protocol = \"v1\"\naccept_proxy_protocol = true\nsni_routes = { \"*.a.example\" = \"web\" }\nhandshake_timeout = \"2s\"",
        ),
    )
    .expect("valid")
    .config;
    let l = &c.listeners[0];
    assert_eq!(l.proxy_protocol, Some(ProxyVersion::V1));
    assert!(l.accept_proxy_protocol);
    assert_eq!(
        l.sni_routes,
        vec![SniRoute {
            pattern: "*.a.example".into(),
            pool: 0
        }]
    );
    assert_eq!(l.handshake_timeout, std::time::Duration::from_secs(2));
    one_error(
        &with(
            "access_log = true",
            "sni_routes = { \"a.example\" = \"wbe\" }",
        ),
        "listener[0].sni_routes.\"a.example\"",
        "does not exist",
    );
    one_error(
        &with("access_log = true", "sni_routes = { \"a b\" = \"web\" }"),
        "listener[0].sni_routes.\"a b\"",
        "expected a host name",
    );
    let udp = GOOD.replace(
        "pool = \"web\"\nidle_timeout",
        "protocol = \"udp\"\npool = \"web\"\nproxy_protocol = \"v2\"\nidle_timeout",
    );
    one_error(
        &udp,
        "listener[0].proxy_protocol",
        "only to tcp and http listeners",
    );
    one_error(
        &with(
            "slow_start = \"5s\"",
            "backend_tls = { verify = true, colour = 1 }",
        ),
        "pool[0].backend_tls.colour",
        "unknown key",
    );
    let c = load_str(
        "t.toml",
        &with("algorithm = \"weighted-round-robin\"", "algorithm = \"consistent-hash\"\nhash_key = \"sni\"").replace("slow_start = \"5s\"", "slow_start = \"5s\"\nbackend_tls = { verify = false, server_name = \"internal.example\" }"),
    )
    .expect("valid")
    .config;
    assert_eq!(c.pools[0].hash_key, HashKey::Sni);
    assert_eq!(
        c.pools[0].backend_tls,
        Some(BackendTls {
            ca: None,
            server_name: Some("internal.example".into()),
            verify: false
        })
    );
}
