//! What an introspection endpoint's answer (RFC 7662 §2.2) means for lb: the JSON read
//! strictly (a wrong type is an error of the server, never a guess), the token's validity
//! decided against a wall-clock time passed in, the scopes checked and the time an answer
//! may be reused computed. Pure; no I/O, no clock.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

/// Largest answer read (bytes); a longer one is an error of the endpoint.
pub const MAX_ANSWER: usize = 64 * 1024;
/// Largest kept claims (bytes of their JSON) of a token whose answer is cached; a token
/// with more is checked on every request (it is the cache's per-entry bound).
pub const MAX_KEPT: usize = 2048;
/// Longest reuse of an answer saying a token is not active: short, so a token that becomes
/// valid (a clock skew, a replicated server catching up) is not refused for long.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(10);
/// Claims kept for every active token (beside the forwarded ones): what later policies may
/// key on (`jwt:sub` rate limits, `${jwt.sub}` headers).
pub const KEPT: &[&str] = &["sub", "client_id", "username", "scope"];

/// What an active token was granted, as cached.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    /// `scope`, split on spaces.
    pub scopes: Vec<String>,
    /// `exp`, seconds since the epoch.
    pub exp: Option<u64>,
    /// The kept claims (a JSON object).
    pub claims: Arc<Value>,
    /// Whether the kept claims fit [`MAX_KEPT`].
    pub cacheable: bool,
}

/// What the endpoint said of a token.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Active(Grant),
    /// Not to be accepted; the reason is the metric label: `inactive`, `expired`,
    /// `not_yet_valid`, `not_an_access_token`.
    Inactive(&'static str),
}

/// Why an answer is not one lb can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Garbage {
    TooLarge,
    NotJson,
    NotObject,
    /// `active` missing or not a boolean.
    Active,
    /// A time claim (`exp`, `nbf`) that is not a non-negative number.
    Time(&'static str),
    /// `scope` not a string.
    Scope,
}

impl std::fmt::Display for Garbage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge => write!(f, "answer larger than {MAX_ANSWER} bytes"),
            Self::NotJson => f.write_str("answer is not JSON"),
            Self::NotObject => f.write_str("answer is not a JSON object"),
            Self::Active => f.write_str("answer has no boolean `active`"),
            Self::Time(c) => write!(f, "`{c}` is not a time in seconds"),
            Self::Scope => f.write_str("`scope` is not a string"),
        }
    }
}

/// A NumericDate (RFC 7519 §2), whole seconds (a fraction is dropped: earlier, so stricter
/// for `exp`); `Err` for anything else.
fn seconds(o: &Map<String, Value>, claim: &'static str) -> Result<Option<u64>, Garbage> {
    match o.get(claim) {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(s), _) => Ok(Some(s)),
            (None, Some(f)) if f.is_finite() && (0.0..1.8e19).contains(&f) => Ok(Some(f as u64)),
            _ => Err(Garbage::Time(claim)),
        },
        Some(_) => Err(Garbage::Time(claim)),
    }
}

/// Reads an answer at wall-clock time `now` (since the epoch); `forwarded` claims are kept
/// beside [`KEPT`].
pub fn parse<'a>(
    body: &[u8],
    now: Duration,
    forwarded: impl Iterator<Item = &'a str>,
) -> Result<Answer, Garbage> {
    if body.len() > MAX_ANSWER {
        return Err(Garbage::TooLarge);
    }
    let v: Value = serde_json::from_slice(body).map_err(|_| Garbage::NotJson)?;
    let Value::Object(o) = v else {
        return Err(Garbage::NotObject);
    };
    let active = match o.get("active") {
        Some(Value::Bool(b)) => *b,
        _ => return Err(Garbage::Active),
    };
    let exp = seconds(&o, "exp")?;
    let nbf = seconds(&o, "nbf")?;
    let scopes: Vec<String> = match o.get("scope") {
        None => Vec::new(),
        Some(Value::String(s)) => s
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        Some(_) => return Err(Garbage::Scope),
    };
    if !active {
        return Ok(Answer::Inactive("inactive"));
    }
    let secs = now.as_secs();
    if exp.is_some_and(|e| secs >= e) {
        return Ok(Answer::Inactive("expired"));
    }
    if nbf.is_some_and(|n| secs < n) {
        return Ok(Answer::Inactive("not_yet_valid"));
    }
    // A refresh token is for the token endpoint, never a bearer credential (RFC 6749 §1.5).
    let hint = o.get("token_type").and_then(Value::as_str).unwrap_or("");
    if hint.eq_ignore_ascii_case("refresh_token") {
        return Ok(Answer::Inactive("not_an_access_token"));
    }
    let mut kept = Map::new();
    for c in KEPT.iter().copied().chain(forwarded) {
        if let Some(v) = o.get(c) {
            kept.insert(c.to_string(), v.clone());
        }
    }
    let claims = Value::Object(kept);
    let cacheable = claims.to_string().len() <= MAX_KEPT;
    Ok(Answer::Active(Grant {
        scopes,
        exp,
        claims: Arc::new(claims),
        cacheable,
    }))
}

/// Whether `held` has every scope of `required` (OAuth scopes add up: a route needing
/// `read write` needs both).
pub fn has_scopes(required: &[String], held: &[String]) -> bool {
    required.iter().all(|r| held.contains(r))
}

/// How long an active token's answer may be reused at `now` (wall clock since the epoch):
/// `cache_ttl`, never past `exp`; zero when it must not be (too large to keep).
pub fn positive_ttl(grant: &Grant, cache_ttl: Duration, now: Duration) -> Duration {
    if !grant.cacheable {
        return Duration::ZERO;
    }
    match grant.exp {
        Some(e) => cache_ttl.min(Duration::from_secs(e).saturating_sub(now)),
        None => cache_ttl,
    }
}

/// How long a "not active" answer may be reused.
pub fn negative_ttl(cache_ttl: Duration) -> Duration {
    cache_ttl.min(NEGATIVE_TTL)
}

/// Whether `token` may be sent to the endpoint: RFC 6750's b64token
/// (`1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`), at most `max` bytes.
/// Anything else is refused without a call.
pub fn is_b64token(token: &str, max: usize) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && token.len() <= max
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Duration = Duration::from_secs(1_700_000_000);

    fn read(json: &str) -> Result<Answer, Garbage> {
        parse(json.as_bytes(), NOW, ["x-tenant"].into_iter())
    }

    #[test]
    fn active_tokens_keep_their_scopes_and_only_the_claims_needed() {
        let a = read(
            r#"{"active":true,"scope":"read  write","sub":"alice","exp":1700000600,"x-tenant":"t1","secret":"s","client_id":"app"}"#,
        );
        let Ok(Answer::Active(g)) = a else {
            panic!("{a:?}")
        };
        assert_eq!(g.scopes, ["read", "write"]);
        assert_eq!(g.exp, Some(1_700_000_600));
        assert_eq!(
            *g.claims,
            serde_json::json!({"sub":"alice","client_id":"app","scope":"read  write","x-tenant":"t1"})
        );
        assert!(g.cacheable);
    }

    #[test]
    fn inactive_expired_early_and_refresh_tokens_are_not_accepted() {
        assert_eq!(
            read(r#"{"active":false}"#),
            Ok(Answer::Inactive("inactive"))
        );
        // An inactive answer need hold nothing else, but what it holds must still be sane.
        assert_eq!(
            read(r#"{"active":false,"exp":"soon"}"#),
            Err(Garbage::Time("exp"))
        );
        assert_eq!(
            read(r#"{"active":true,"exp":1700000000}"#),
            Ok(Answer::Inactive("expired"))
        );
        assert_eq!(
            read(r#"{"active":true,"exp":1}"#),
            Ok(Answer::Inactive("expired"))
        );
        assert!(matches!(
            read(r#"{"active":true,"exp":1700000001}"#),
            Ok(Answer::Active(_))
        ));
        assert_eq!(
            read(r#"{"active":true,"nbf":1700000001}"#),
            Ok(Answer::Inactive("not_yet_valid"))
        );
        assert_eq!(
            read(r#"{"active":true,"token_type":"Refresh_Token"}"#),
            Ok(Answer::Inactive("not_an_access_token"))
        );
    }

    #[test]
    fn hostile_answers_are_errors_not_guesses() {
        for (body, want) in [
            ("", Garbage::NotJson),
            ("<html>", Garbage::NotJson),
            ("[true]", Garbage::NotObject),
            ("true", Garbage::NotObject),
            ("{}", Garbage::Active),
            (r#"{"active":"true"}"#, Garbage::Active),
            (r#"{"active":1}"#, Garbage::Active),
            (r#"{"active":null}"#, Garbage::Active),
            (r#"{"active":true,"exp":-5}"#, Garbage::Time("exp")),
            (r#"{"active":true,"exp":true}"#, Garbage::Time("exp")),
            (r#"{"active":true,"exp":1e400}"#, Garbage::NotJson),
            (r#"{"active":true,"exp":1e300}"#, Garbage::Time("exp")),
            (r#"{"active":true,"nbf":"0"}"#, Garbage::Time("nbf")),
            (r#"{"active":true,"scope":["a"]}"#, Garbage::Scope),
        ] {
            assert_eq!(read(body), Err(want), "{body}");
        }
        let huge = format!(r#"{{"active":true,"pad":"{}"}}"#, "x".repeat(MAX_ANSWER));
        assert_eq!(read(&huge), Err(Garbage::TooLarge));
        // A fractional exp is read down (stricter), not refused.
        assert_eq!(
            read(r#"{"active":true,"exp":1700000000.9}"#),
            Ok(Answer::Inactive("expired"))
        );
    }

    #[test]
    fn big_claims_are_served_but_not_cached() {
        let body = format!(r#"{{"active":true,"sub":"{}"}}"#, "a".repeat(MAX_KEPT));
        let Ok(Answer::Active(g)) = read(&body) else {
            panic!()
        };
        assert!(!g.cacheable);
        assert_eq!(
            positive_ttl(&g, Duration::from_secs(60), NOW),
            Duration::ZERO
        );
    }

    #[test]
    fn reuse_is_bounded_by_exp_and_cache_ttl() {
        let grant = |exp| Grant {
            scopes: vec![],
            exp,
            claims: Arc::new(Value::Null),
            cacheable: true,
        };
        let ttl = Duration::from_secs(60);
        let now = NOW + Duration::from_millis(250);
        assert_eq!(positive_ttl(&grant(None), ttl, now), ttl);
        assert_eq!(
            positive_ttl(&grant(Some(1_700_000_010)), ttl, now),
            Duration::from_millis(9_750),
            "to the token's exp, not past it"
        );
        assert_eq!(positive_ttl(&grant(Some(1_700_009_999)), ttl, now), ttl);
        assert_eq!(positive_ttl(&grant(Some(5)), ttl, now), Duration::ZERO);
        assert_eq!(
            positive_ttl(&grant(None), Duration::ZERO, now),
            Duration::ZERO
        );
        assert_eq!(negative_ttl(ttl), NEGATIVE_TTL);
        assert_eq!(negative_ttl(Duration::from_secs(3)), Duration::from_secs(3));
    }

    #[test]
    fn scopes_all_have_to_be_held() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(has_scopes(&s(&[]), &s(&[])));
        assert!(has_scopes(&s(&["read"]), &s(&["write", "read"])));
        assert!(!has_scopes(&s(&["read", "write"]), &s(&["read"])));
        assert!(!has_scopes(&s(&["read"]), &s(&["reader", "READ"])));
    }

    #[test]
    fn only_b64tokens_are_sent() {
        assert!(is_b64token("abc-._~+/09==", 100));
        for bad in [
            "", "==", "a b", "a\tb", "a\u{1}b", "a\"b", "a,b", "é", "a=b", "a%20",
        ] {
            assert!(!is_b64token(bad, 100), "{bad:?}");
        }
        assert!(is_b64token(&"a".repeat(100), 100));
        assert!(!is_b64token(&"a".repeat(101), 100));
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_without_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = parse(&body, NOW, std::iter::empty());
        }

        #[test]
        fn an_active_answer_is_never_past_exp(exp in 0u64..3_400_000_000, now in 0u64..3_400_000_000) {
            let body = format!(r#"{{"active":true,"exp":{exp}}}"#);
            let now = Duration::from_secs(now);
            if let Ok(Answer::Active(g)) = parse(body.as_bytes(), now, std::iter::empty()) {
                proptest::prop_assert!(now.as_secs() < exp);
                proptest::prop_assert!(now + positive_ttl(&g, Duration::from_secs(86_400), now) <= Duration::from_secs(exp));
            }
        }
    }
}
