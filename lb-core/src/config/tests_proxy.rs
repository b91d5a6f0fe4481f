//! A listener's `trusted_proxies`.

use super::*;

fn listener(extra: &str, protocol: &str) -> String {
    format!("[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:8080\"\nprotocol = \"{protocol}\"\npool = \"web\"\n{extra}\n\n[[pool]]\nname = \"web\"\nbackends = [{{ addr = \"10.0.0.1:80\" }}]\n")
}

fn error_at(text: &str, key: &str) -> String {
    let e = load_str("t.toml", text).expect_err("must be refused");
    let d = e
        .diagnostics
        .iter()
        .find(|d| d.is_error() && d.key_path.as_deref() == Some(key))
        .unwrap_or_else(|| panic!("no error at {key}: {e}"));
    d.message.clone()
}

#[test]
fn trusted_proxies_are_networks_on_tcp_and_http_listeners() {
    for protocol in ["tcp", "http"] {
        let l = load_str(
            "t.toml",
            &listener(
                "accept_proxy_protocol = true\ntrusted_proxies = [\"10.0.0.0/8\", \"2001:db8::/32\", \"192.0.2.7\"]",
                protocol,
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let t = l.config.listeners[0].trusted_proxies.clone().expect("set");
        assert_eq!(t.len(), 3);
        assert!(t[0].contains("10.9.8.7".parse().expect("ip")));
        assert!(t[2].contains("192.0.2.7".parse().expect("ip")));
        assert!(!t[2].contains("192.0.2.8".parse().expect("ip")));
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    }
}

#[test]
fn without_trusted_proxies_any_peer_may_send_one_with_a_warning() {
    let l = load_str("t.toml", &listener("accept_proxy_protocol = true", "tcp"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(l.config.listeners[0].trusted_proxies, None);
    let w = &l.warnings[0];
    assert_eq!(
        w.key_path.as_deref(),
        Some("listener[0].accept_proxy_protocol")
    );
    assert!(w
        .help
        .as_deref()
        .is_some_and(|h| h.contains("trusted_proxies")));
}

#[test]
fn trusted_proxies_mistakes_are_errors() {
    let key = "listener[0].trusted_proxies";
    let msg = error_at(&listener("trusted_proxies = [\"10.0.0.0/8\"]", "tcp"), key);
    assert!(msg.contains("no effect"), "{msg}");
    let msg = error_at(
        &listener(
            "accept_proxy_protocol = false\ntrusted_proxies = [\"10.0.0.0/8\"]",
            "tcp",
        ),
        key,
    );
    assert!(msg.contains("no effect"), "{msg}");
    let msg = error_at(
        &listener("accept_proxy_protocol = true\ntrusted_proxies = []", "tcp"),
        key,
    );
    assert!(msg.contains("empty"), "{msg}");
    for bad in ["10.0.0.0/33", "lb.example", "10.0.0.0/x"] {
        let msg = error_at(
            &listener(
                &format!("accept_proxy_protocol = true\ntrusted_proxies = [\"{bad}\"]"),
                "tcp",
            ),
            "listener[0].trusted_proxies[0]",
        );
        assert!(
            msg.contains("expected an address or network"),
            "{bad}: {msg}"
        );
    }
    let msg = error_at(&listener("trusted_proxies = [\"10.0.0.0/8\"]", "udp"), key);
    assert!(msg.contains("only to tcp and http"), "{msg}");
}

/// Review of issue 15: a trusted network that trusts everyone, or one written with host bits,
/// is said (a warning: the config still loads and acts as written).
#[test]
fn trusted_networks_that_trust_everyone_or_have_host_bits_are_warned_about() {
    for (list, said) in [
        ("\"0.0.0.0/0\"", "trusts every peer"),
        ("\"::/0\"", "trusts every peer"),
        ("\"10.0.0.1/8\"", "host bits"),
        ("\"2001:db8::1/32\"", "host bits"),
    ] {
        let l = load_str(
            "t.toml",
            &listener(
                &format!("accept_proxy_protocol = true\ntrusted_proxies = [{list}]"),
                "tcp",
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            l.warnings.iter().any(|w| w.message.contains(said)
                && w.key_path.as_deref() == Some("listener[0].trusted_proxies[0]")),
            "{list}: {:?}",
            l.warnings
        );
    }
    for fine in [
        "\"10.0.0.0/8\"",
        "\"192.0.2.7\"",
        "\"2001:db8::/32\"",
        "\"::1\"",
    ] {
        let l = load_str(
            "t.toml",
            &listener(
                &format!("accept_proxy_protocol = true\ntrusted_proxies = [{fine}]"),
                "tcp",
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(l.warnings.is_empty(), "{fine}: {:?}", l.warnings);
    }
}
