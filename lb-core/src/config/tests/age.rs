//! `max_connection_age`, its jitter and grace: what they accept, and an error naming why
//! wherever they could not act.

use super::*;
use crate::config::model::MaxAge;
use std::time::Duration;

const TCP: &str = r#"
[[listener]]
name = "db"
bind = "127.0.0.1:5432"
pool = "p"

[[pool]]
name = "p"
backends = [{ addr = "127.0.0.1:9001" }]
"#;

fn with(line: &str) -> String {
    TCP.replacen("pool = \"p\"", &format!("pool = \"p\"\n{line}"), 1)
}

#[test]
fn age_jitter_and_grace_are_read_with_defaults() {
    let l = load_str("t.toml", &with("max_connection_age = \"30m\"")).expect("valid");
    let m = l.config.listeners[0].max_age.expect("set");
    assert_eq!(
        m,
        MaxAge {
            age: Duration::from_secs(1800),
            jitter: 0.0,
            grace: Duration::from_secs(5)
        }
    );
    let text = with(
        "max_connection_age = \"2s\"\nmax_connection_age_jitter = \"10%\"\nage_grace = \"1s\"",
    );
    let m = load_str("t.toml", &text).expect("valid").config.listeners[0]
        .max_age
        .expect("set");
    assert_eq!(
        (m.age, m.jitter, m.grace),
        (Duration::from_secs(2), 0.1, Duration::from_secs(1))
    );
    assert_eq!(m.for_connection(-1.0), Duration::from_millis(1800));
    assert_eq!(m.for_connection(1.0), Duration::from_millis(2200));
    assert_eq!(
        m.for_connection(7.0),
        Duration::from_millis(2200),
        "draws are clamped"
    );
    assert!(load_str("t.toml", TCP).expect("valid").config.listeners[0]
        .max_age
        .is_none());
}

#[test]
fn age_keys_that_could_not_act_are_errors() {
    for (line, key, needle) in [
        (
            "max_connection_age_jitter = \"10%\"",
            "listener[0].max_connection_age_jitter",
            "does nothing without max_connection_age",
        ),
        (
            "age_grace = \"1s\"",
            "listener[0].age_grace",
            "does nothing without max_connection_age",
        ),
        (
            "max_connection_age = \"0s\"",
            "listener[0].max_connection_age",
            "longer than zero",
        ),
        (
            "max_connection_age = \"soon\"",
            "listener[0].max_connection_age",
            "",
        ),
        (
            "max_connection_age = \"1m\"\nmax_connection_age_jitter = \"100%\"",
            "listener[0].max_connection_age_jitter",
            "below 100%",
        ),
        (
            "max_connection_age = \"1m\"\nmax_connection_age_jitter = \"0.1\"",
            "listener[0].max_connection_age_jitter",
            "percentage",
        ),
    ] {
        one_error(&with(line), key, needle);
    }
    let udp = with("max_connection_age = \"1m\"").replacen(
        "pool = \"p\"",
        "protocol = \"udp\"\npool = \"p\"",
        1,
    );
    one_error(
        &udp,
        "listener[0].max_connection_age",
        "only to tcp and http",
    );
}
