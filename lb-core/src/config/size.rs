//! Parsing of config sizes such as `"10MiB"`, `"512k"`, `"1GB"`. Pure; no I/O.

/// Units, longest first so `KiB` wins over `K`. Decimal and binary prefixes both mean what they
/// say; a bare `k`/`m`/`g` is binary, as in nginx.
const UNITS: &[(&str, u64)] = &[
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("k", 1 << 10),
    ("m", 1 << 20),
    ("g", 1 << 30),
    ("b", 1),
];

/// Parses `<integer>[unit]`; the error is a sentence naming what was expected.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let expected =
        || format!("expected a size such as 1048576, \"512k\" or \"10MiB\", found \"{text}\"");
    if digits == 0 {
        return Err(expected());
    }
    let value: u64 = s[..digits]
        .parse()
        .map_err(|_| format!("size \"{text}\" is too large"))?;
    let unit = s[digits..].trim().to_ascii_lowercase();
    let scale = if unit.is_empty() {
        1
    } else {
        UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, n)| *n)
            .ok_or_else(expected)?
    };
    value
        .checked_mul(scale)
        .ok_or_else(|| format!("size \"{text}\" is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn units() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("512k"), Ok(512 * 1024));
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("1 g"), Ok(1 << 30));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("10 parsecs").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("18446744073709551615g").is_err());
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,24}") {
            let _ = parse_size(&s);
        }

        #[test]
        fn kib_round_trips(n in 0u64..1 << 40) {
            prop_assert_eq!(parse_size(&format!("{n}KiB")), Ok(n * 1024));
        }
    }
}
