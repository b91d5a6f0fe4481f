//! UDP health-check payloads as written in the config: plain text, or `hex:` followed by hex
//! digits (spaces allowed between bytes). Pure.

/// Parses a `send`/`expect` value.
pub fn parse_payload(s: &str) -> Result<Vec<u8>, String> {
    let Some(hex) = s.strip_prefix("hex:") else {
        if s.is_empty() {
            return Err("payload must not be empty".into());
        }
        return Ok(s.as_bytes().to_vec());
    };
    let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if digits.is_empty() || digits.len() % 2 != 0 {
        return Err(format!(
            "expected an even number of hex digits after \"hex:\", found \"{hex}\""
        ));
    }
    digits
        .chunks(2)
        .map(|p| {
            let v = |c: u8| {
                (c as char)
                    .to_digit(16)
                    .ok_or_else(|| format!("\"{}\" is not a hex digit", c as char))
            };
            Ok((v(p[0])? * 16 + v(p[1])?) as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn text_and_hex() {
        assert_eq!(parse_payload("ping"), Ok(b"ping".to_vec()));
        assert_eq!(parse_payload("hex:00ff 0A"), Ok(vec![0, 255, 10]));
        assert!(parse_payload("hex:abc").is_err());
        assert!(parse_payload("hex:zz").is_err());
        assert!(parse_payload("").is_err());
    }

    proptest! {
        #[test]
        fn hex_round_trips(bytes in proptest::collection::vec(any::<u8>(), 1..64)) {
            let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            prop_assert_eq!(parse_payload(&format!("hex:{text}")), Ok(bytes));
        }
    }
}
