//! The `jwt` policy's cache of verified tokens against full verification: for every token a
//! client could send (good, expired or early around the leeway, forged, re-signed with
//! another secret, `alg` swapped, `crit`, wrong issuer), asked first, asked again, or asked
//! after a near relative was cached, the cached path gives the verdict and claims the full
//! check gives.

use std::time::Duration;

use jsonwebtoken::{encode, Algorithm, DecodingKey, EncodingKey, Header};
use lb_l7::policy::jwt::{Jwt, Keys, Settings};
use proptest::prelude::*;
use serde_json::{json, Value};

const SECRET: &[u8] = b"cache-test-secret-0123456789";
const LEEWAY: u64 = 30;

fn policy() -> Jwt {
    Jwt::new(
        "auth",
        Settings {
            algorithms: vec!["HS256".into(), "HS384".into()],
            keys: Keys::One(DecodingKey::from_secret(SECRET)),
            issuer: Some("https://auth.example".into()),
            leeway: Duration::from_secs(LEEWAY),
            ..Settings::default()
        },
    )
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

/// Times relative to now, kept 5 s away from the leeway's edges so the clock's next tick
/// cannot change a verdict between the two paths.
const OFFSETS: [i64; 6] = [-400, -(LEEWAY as i64) - 5, -(LEEWAY as i64) + 5, 5, 35, 400];

#[derive(Debug, Clone)]
enum Twist {
    None,
    /// One byte of the signature changed.
    Forged,
    /// Signed with another secret.
    OtherSecret,
    /// Signed HS384 (accepted) or HS512 (not).
    Alg(Algorithm),
    /// The header names a critical extension.
    Crit,
    WrongIssuer,
}

fn mint(exp: Option<i64>, nbf: Option<i64>, sub: u8, twist: &Twist) -> String {
    let mut claims = json!({"sub": format!("user{sub}"), "iss": "https://auth.example"});
    if let Some(e) = exp {
        claims["exp"] = json!(now() + e);
    }
    if let Some(n) = nbf {
        claims["nbf"] = json!(now() + n);
    }
    if matches!(twist, Twist::WrongIssuer) {
        claims["iss"] = json!("https://evil.example");
    }
    let alg = match twist {
        Twist::Alg(a) => *a,
        _ => Algorithm::HS256,
    };
    let secret: &[u8] = match twist {
        Twist::OtherSecret => b"another-secret",
        _ => SECRET,
    };
    let token = if matches!(twist, Twist::Crit) {
        let head = json!({"alg": "HS256", "typ": "JWT", "crit": ["exp"]});
        sign_raw(&head, &claims, secret)
    } else {
        encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .expect("sign")
    };
    match twist {
        Twist::Forged => {
            let mut b = token.into_bytes();
            let last = b.len() - 2;
            b[last] = if b[last] == b'A' { b'B' } else { b'A' };
            String::from_utf8(b).expect("ascii")
        }
        _ => token,
    }
}

fn sign_raw(head: &Value, claims: &Value, secret: &[u8]) -> String {
    use base64::Engine;
    let b = |v: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(v).expect("json"))
    };
    let message = format!("{}.{}", b(head), b(claims));
    let sig = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(secret),
        Algorithm::HS256,
    )
    .expect("sign");
    format!("{message}.{sig}")
}

fn twist() -> impl Strategy<Value = Twist> {
    prop_oneof![
        4 => Just(Twist::None),
        1 => Just(Twist::Forged),
        1 => Just(Twist::OtherSecret),
        1 => Just(Twist::Alg(Algorithm::HS384)),
        1 => Just(Twist::Alg(Algorithm::HS512)),
        1 => Just(Twist::Crit),
        1 => Just(Twist::WrongIssuer),
    ]
}

type Verdict = Result<Value, &'static str>;

fn full(p: &Jwt, token: &str) -> Verdict {
    p.verify(token).map_err(|(why, _)| why)
}

fn cached(p: &Jwt, token: &str) -> Verdict {
    p.verify_cached(token)
        .map(|c| (*c).clone())
        .map_err(|(why, _)| why)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A sequence of tokens through one policy (so earlier ones are cached when later ones
    /// come), each asked twice: both answers are the full check's.
    #[test]
    fn the_cache_never_changes_a_verdict(
        tokens in proptest::collection::vec(
            (proptest::option::of(proptest::sample::select(OFFSETS.to_vec())),
             proptest::option::of(proptest::sample::select(OFFSETS.to_vec())),
             0u8..3, twist()),
            1..12)
    ) {
        let p = policy();
        let reference = policy();
        for (exp, nbf, sub, twist) in &tokens {
            let token = mint(*exp, *nbf, *sub, twist);
            let want = full(&reference, &token);
            prop_assert_eq!(&cached(&p, &token), &want, "first ask: {:?} {:?} {:?}", exp, nbf, twist);
            prop_assert_eq!(&cached(&p, &token), &want, "second ask: {:?} {:?} {:?}", exp, nbf, twist);
        }
    }
}

#[test]
fn a_forged_copy_of_a_cached_token_is_refused() {
    let p = policy();
    let good = mint(Some(400), None, 1, &Twist::None);
    assert!(cached(&p, &good).is_ok());
    assert!(cached(&p, &good).is_ok(), "the hit");
    // Every single-byte change of the signature, with the genuine token cached.
    let sig_at = good.rfind('.').expect("three parts") + 1;
    for i in sig_at..good.len() {
        let mut b = good.clone().into_bytes();
        b[i] = if b[i] == b'x' { b'y' } else { b'x' };
        let forged = String::from_utf8(b).expect("ascii");
        let verdict = cached(&p, &forged);
        assert!(verdict.is_err(), "byte {i}");
        assert_eq!(verdict, full(&policy(), &forged), "byte {i}");
    }
    // The claims changed, the genuine signature kept.
    let (_, sig) = good.rsplit_once('.').expect("three parts");
    let other = mint(Some(400), None, 2, &Twist::None);
    let (message, _) = other.rsplit_once('.').expect("three parts");
    assert_eq!(
        cached(&p, &format!("{message}.{sig}")),
        Err("bad_signature")
    );
}

#[test]
fn a_token_too_long_to_keep_is_verified_in_full_each_time() {
    let p = policy();
    let claims = json!({"sub": "big", "iss": "https://auth.example", "exp": now() + 400, "pad": "x".repeat(5_000)});
    let long = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .expect("sign");
    assert!(long.len() > 4_096);
    for _ in 0..2 {
        assert_eq!(cached(&p, &long), full(&p, &long));
        assert!(cached(&p, &long).is_ok());
    }
    let mut forged = long.into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).expect("ascii");
    assert_eq!(cached(&p, &forged), Err("bad_signature"));
}
