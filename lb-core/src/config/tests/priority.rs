//! `overprovisioning` on a pool and `zone` on a backend: what they accept and the errors
//! and warnings they give.

use super::*;

const TWO_LEVELS: &str = r#"
[[listener]]
name = "db"
bind = "127.0.0.1:5432"
pool = "p"

[[pool]]
name = "p"
backends = [
  { addr = "127.0.0.1:9001", zone = "eu-west-1a" },
  { addr = "127.0.0.1:9002", priority = 1, zone = "us-east-1b" },
]
"#;

fn with(line: &str) -> String {
    TWO_LEVELS.replacen("name = \"p\"\n", &format!("name = \"p\"\n{line}\n"), 1)
}

#[test]
fn overprovisioning_defaults_to_envoys_and_takes_hundredths() {
    let l = load_str("t.toml", TWO_LEVELS).expect("valid");
    let p = &l.config.pools[0];
    assert_eq!(p.overprovisioning_pct, 140);
    assert_eq!(p.backends[0].zone.as_deref(), Some("eu-west-1a"));
    assert_eq!(p.backends[1].zone.as_deref(), Some("us-east-1b"));
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    for (v, pct) in [("1.0", 100), ("1.25", 125), ("2", 200), ("100.0", 10_000)] {
        let l = load_str("t.toml", &with(&format!("overprovisioning = {v}"))).expect(v);
        assert_eq!(l.config.pools[0].overprovisioning_pct, pct, "{v}");
    }
}

#[test]
fn overprovisioning_out_of_range_is_an_error() {
    for v in ["0.99", "0.0", "-1.4", "100.5", "nan", "inf"] {
        one_error(
            &with(&format!("overprovisioning = {v}")),
            "pool[0].overprovisioning",
            "expected a number from 1.0 to 100",
        );
    }
    let e = errors(&with("overprovisioning = \"1.4\""));
    assert!(!e.is_empty(), "a string is refused");
}

#[test]
fn overprovisioning_on_a_single_level_pool_is_a_warning() {
    let text = with("overprovisioning = 1.5").replace(", priority = 1", "");
    let l = load_str("t.toml", &text).expect("a warning only");
    assert!(
        l.warnings
            .iter()
            .any(|w| w.message.contains("`overprovisioning` has no effect")),
        "{:?}",
        l.warnings
    );
}

#[test]
fn bad_zone_labels_are_errors() {
    for bad in ["", "eu west", "a\\\"b", &"z".repeat(65)] {
        let text = TWO_LEVELS.replace("\"eu-west-1a\"", &format!("\"{bad}\""));
        one_error(&text, "pool[0].backends[0].zone", "expected a zone label");
    }
    let text = TWO_LEVELS.replace("\"eu-west-1a\"", "7");
    assert!(!errors(&text).is_empty(), "a number is refused");
}
