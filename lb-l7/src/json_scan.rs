//! Bounds read off a JSON text before anything is built from it (the text need not be
//! valid): one scanner of what lies outside its strings, for every such bound.

/// The bytes of `json` outside its strings (each string's opening quote included).
pub(crate) fn outside_strings(json: &[u8]) -> impl Iterator<Item = u8> + '_ {
    let (mut in_string, mut escaped) = (false, false);
    json.iter().copied().filter(move |&b| {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            false
        } else {
            in_string = b == b'"';
            true
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_their_escapes_are_skipped() {
        let seen: Vec<u8> = outside_strings(br#"{"a\"[,": [1, "}\\"], "b": {}}"#).collect();
        assert_eq!(seen, br#"{": [1, "], ": {}}"#.to_vec());
    }
}
