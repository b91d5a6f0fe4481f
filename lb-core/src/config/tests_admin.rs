//! `[admin]` keys: `bind` needs a `token` off loopback, `hosts`, `max_connections`.

use super::*;

const LISTENER: &str = "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:8080\"\npool = \"web\"\n\n[[pool]]\nname = \"web\"\nbackends = [{ addr = \"10.0.0.1:80\" }]\n";

fn with_admin(admin: &str) -> String {
    format!("[admin]\n{admin}\n\n{LISTENER}")
}

fn admin_of(admin: &str) -> model::Admin {
    match load_str("t.toml", &with_admin(admin)) {
        Ok(l) => l.config.admin.expect("admin"),
        Err(e) => panic!("{}", e),
    }
}

fn error_at(admin: &str, key: &str) -> String {
    let e = load_str("t.toml", &with_admin(admin)).expect_err("must be refused");
    let d = e
        .diagnostics
        .iter()
        .find(|d| d.is_error() && d.key_path.as_deref() == Some(key))
        .unwrap_or_else(|| panic!("no error at {key}: {}", e));
    format!("{} {}", d.message, d.help.clone().unwrap_or_default())
}

#[test]
fn a_non_loopback_bind_needs_a_token() {
    for bind in ["0.0.0.0:9900", "10.0.0.5:9900", "[::]:9900"] {
        let msg = error_at(&format!("bind = \"{bind}\""), "admin.bind");
        assert!(msg.contains("no token"), "{msg}");
        assert!(msg.contains("token = "), "the fix is named: {msg}");
        let ok = admin_of(&format!("bind = \"{bind}\"\ntoken = \"s3cret\""));
        assert_eq!(ok.token.as_deref(), Some("s3cret"));
    }
    for bind in [
        "127.0.0.1:9900",
        "127.0.0.2:9900",
        "[::1]:9900",
        "[::ffff:127.0.0.1]:9900",
    ] {
        assert_eq!(admin_of(&format!("bind = \"{bind}\"")).token, None);
    }
    let msg = error_at("bind = \"0.0.0.0:9900\"\ntoken = \"  \"", "admin.token");
    assert!(msg.contains("empty"), "{msg}");
}

#[test]
fn hosts_are_names_kept_lowercase() {
    let a = admin_of("bind = \"127.0.0.1:9900\"\nhosts = [\"LB.example.\", \"lb-1.internal\"]");
    assert_eq!(a.hosts, ["lb.example", "lb-1.internal"]);
    assert!(a.checks_host());
    for bad in ["lb.example:9900", "*.example", "http://lb.example", ""] {
        let msg = error_at(
            &format!("bind = \"127.0.0.1:9900\"\nhosts = [\"{bad}\"]"),
            "admin.hosts[0]",
        );
        assert!(msg.contains("expected a host name"), "{bad}: {msg}");
    }
    let msg = error_at(
        "bind = \"127.0.0.1:9900\"\nhosts = [\"10.0.0.1\"]",
        "admin.hosts[0]",
    );
    assert!(msg.contains("IP"), "{msg}");
    let msg = error_at("bind = \"127.0.0.1:9900\"\nhosts = []", "admin.hosts");
    assert!(msg.contains("empty"), "{msg}");
}

#[test]
fn host_checks_apply_without_a_token_or_with_hosts() {
    assert!(admin_of("bind = \"127.0.0.1:9900\"").checks_host());
    assert!(!admin_of("bind = \"127.0.0.1:9900\"\ntoken = \"t\"").checks_host());
    assert!(
        admin_of("bind = \"127.0.0.1:9900\"\ntoken = \"t\"\nhosts = [\"lb.example\"]")
            .checks_host()
    );
}

#[test]
fn max_connections_defaults_to_64_and_is_bounded() {
    assert_eq!(admin_of("bind = \"127.0.0.1:9900\"").max_connections, 64);
    assert_eq!(
        admin_of("bind = \"127.0.0.1:9900\"\nmax_connections = 8").max_connections,
        8
    );
    let msg = error_at(
        "bind = \"127.0.0.1:9900\"\nmax_connections = 0",
        "admin.max_connections",
    );
    assert!(msg.contains("from 1"), "{msg}");
}
