//! Parsing of config durations such as `"250ms"`, `"2s"`, `"5m"`. Pure; no I/O.

use std::time::Duration;

/// Units accepted in config durations, longest suffix first so `ms` wins over `m`/`s`.
const UNITS: &[(&str, u64)] = &[
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

/// Parses `<integer><unit>` where unit is one of `ms`, `s`, `m`, `h`, `d`.
///
/// Compound forms (`1m30s`) are accepted as a sum of parts. The error is a
/// human sentence naming what was expected.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err(
            "expected a duration such as \"250ms\", \"2s\" or \"5m\", found an empty string".into(),
        );
    }
    let mut total_ms: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "expected a duration such as \"250ms\", \"2s\" or \"5m\", found \"{text}\""
            ));
        }
        let value: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("duration \"{text}\" is too large"))?;
        rest = &rest[digits..];
        let Some((unit, scale)) = UNITS.iter().find(|(u, _)| rest.starts_with(u)) else {
            return Err(if rest.is_empty() {
                format!("duration \"{text}\" needs a unit: ms, s, m, h or d (e.g. \"{value}s\")")
            } else {
                format!("expected a duration such as \"250ms\", \"2s\" or \"5m\", found \"{text}\"")
            });
        };
        rest = &rest[unit.len()..];
        total_ms = value
            .checked_mul(*scale)
            .and_then(|v| total_ms.checked_add(v))
            .ok_or_else(|| format!("duration \"{text}\" is too large"))?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Formats a duration the way the config writes it (used by `lb check`'s plan).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0ms".into()
    } else if ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1_000 == 0 {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_bad_forms() {
        for bad in [
            "",
            "2",
            "s",
            "2 s",
            "-1s",
            "1.5s",
            "2sec",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse_duration("2")
            .expect_err("no unit")
            .contains("needs a unit"));
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(ms in 0u64..10_000_000_000) {
            let d = Duration::from_millis(ms);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }

        #[test]
        fn never_panics(s in ".{0,24}") {
            let _ = parse_duration(&s);
        }
    }
}
