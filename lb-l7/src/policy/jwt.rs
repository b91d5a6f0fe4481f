//! `kind = "jwt"`: bearer tokens (RFC 7519) verified with jsonwebtoken. The token's `alg`
//! must be one of the configured algorithms and fit the key (an RSA public key never
//! verifies an HS256 token; `none` never parses); `exp` is required, `nbf` is checked with
//! `leeway`, and a configured `issuer`/`audience` must be in the token. A header naming
//! `crit` extensions is refused (lb understands none). Keys come from an environment variable (HMAC), a PEM public
//! key, or a JWKS file (by `kid`), read when the config is loaded. A token lacking every
//! `require_roles` role gets 403; verified claims can be forwarded as request headers.
//! A token that verified is remembered by its digest ([`super::jwt_cache`]): presented again,
//! only its `exp`/`nbf` are checked again.

use std::sync::Arc;

use http::{header, HeaderMap, HeaderValue};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use lb_core::config::{Diagnostic, FileRef, JwtKey};
use serde_json::Value;

use super::claims::Forward;
use super::jwt_cache::{self, Verified};
use super::{auth_failure, refuse_with, Policy, Refusal, RequestInfo};

/// A policy's verification keys.
#[derive(Clone)]
pub enum Keys {
    One(DecodingKey),
    /// From a JWKS: by `kid`.
    Set(Vec<(Option<String>, DecodingKey)>),
}

impl Default for Keys {
    fn default() -> Self {
        Self::Set(Vec::new())
    }
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::One(_) => f.write_str("Keys::One"),
            Self::Set(k) => write!(f, "Keys::Set({} keys)", k.len()),
        }
    }
}

fn algorithm(name: &str) -> Option<Algorithm> {
    name.parse().ok()
}

fn file_error(f: &FileRef, message: String) -> Diagnostic {
    Diagnostic::error(message)
        .at(f.span.clone())
        .key(f.key.clone())
}

/// Reads a policy's key source; problems go to `diags`, naming the file or variable.
pub fn load_keys(key: &JwtKey, algorithms: &[String], diags: &mut Vec<Diagnostic>) -> Option<Keys> {
    match key {
        JwtKey::SecretEnv { var, span, key } => match std::env::var(var) {
            Ok(secret) if !secret.is_empty() => {
                Some(Keys::One(DecodingKey::from_secret(secret.as_bytes())))
            }
            _ => {
                diags.push(
                    Diagnostic::error(format!(
                        "environment variable {var} is not set (or empty): the jwt secret"
                    ))
                    .at(span.clone())
                    .key(key.clone()),
                );
                None
            }
        },
        JwtKey::PublicKeyFile(f) => {
            let pem = match std::fs::read(&f.path) {
                Ok(b) => b,
                Err(e) => {
                    diags.push(file_error(f, format!("{}: cannot read: {e}", f.path)));
                    return None;
                }
            };
            let family = algorithms.first().map(String::as_str).unwrap_or("");
            let parsed = match family.as_bytes().first() {
                Some(b'R' | b'P') => DecodingKey::from_rsa_pem(&pem),
                Some(b'E') if family == "EdDSA" => DecodingKey::from_ed_pem(&pem),
                Some(b'E') => DecodingKey::from_ec_pem(&pem),
                _ => return None,
            };
            match parsed {
                Ok(k) => Some(Keys::One(k)),
                Err(e) => {
                    diags.push(file_error(
                        f,
                        format!("{}: not a {family} public key in PEM: {e}", f.path),
                    ));
                    None
                }
            }
        }
        JwtKey::JwksFile(f) => {
            let text = match std::fs::read_to_string(&f.path) {
                Ok(t) => t,
                Err(e) => {
                    diags.push(file_error(f, format!("{}: cannot read: {e}", f.path)));
                    return None;
                }
            };
            let set: JwkSet = match serde_json::from_str(&text) {
                Ok(s) => s,
                Err(e) => {
                    diags.push(file_error(
                        f,
                        format!("{}: not a JSON Web Key Set: {e}", f.path),
                    ));
                    return None;
                }
            };
            let mut keys = Vec::new();
            for (i, jwk) in set.keys.iter().enumerate() {
                match DecodingKey::from_jwk(jwk) {
                    Ok(k) => keys.push((jwk.common.key_id.clone(), k)),
                    Err(e) => diags.push(file_error(
                        f,
                        format!(
                            "{}: key {i} ({}): {e}",
                            f.path,
                            jwk.common.key_id.as_deref().unwrap_or("no kid")
                        ),
                    )),
                }
            }
            if keys.is_empty() {
                diags.push(file_error(f, format!("{}: holds no usable key", f.path)));
                return None;
            }
            Some(Keys::Set(keys))
        }
    }
}

/// The configuration of one `jwt` policy, keys loaded. The default has no algorithm and no
/// key: it accepts no token.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub algorithms: Vec<String>,
    pub keys: Keys,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway: std::time::Duration,
    pub require_roles: Vec<String>,
    pub roles_claim: String,
    pub forward_claims: Vec<(String, String)>,
}

#[derive(Debug)]
pub struct Jwt {
    name: String,
    algorithms: Vec<Algorithm>,
    keys: Keys,
    validation: Validation,
    /// `iss` must be one string (RFC 7519 §4.1.1); jsonwebtoken also takes a list holding
    /// the configured issuer among others.
    one_issuer: bool,
    require_roles: Vec<String>,
    roles_claim: String,
    forward: Forward,
    verified: Verified,
}

/// Why a token failed, for the metric and the `error_description`.
fn reason(e: &jsonwebtoken::errors::Error) -> (&'static str, String) {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => ("expired", "the token has expired".into()),
        K::ImmatureSignature => ("not_yet_valid", "the token is not valid yet".into()),
        K::InvalidSignature => ("bad_signature", "the signature does not verify".into()),
        K::InvalidAlgorithm => (
            "bad_algorithm",
            "the token's algorithm is not accepted".into(),
        ),
        K::InvalidIssuer => ("bad_issuer", "wrong issuer".into()),
        K::InvalidAudience => ("bad_audience", "wrong audience".into()),
        K::MissingRequiredClaim(c) => ("missing_claim", format!("the token has no {c} claim")),
        _ => ("malformed", "the token cannot be read".into()),
    }
}

impl Jwt {
    pub fn new(name: &str, s: Settings) -> Self {
        let algorithms: Vec<Algorithm> = s.algorithms.iter().filter_map(|a| algorithm(a)).collect();
        let mut validation =
            Validation::new(algorithms.first().copied().unwrap_or(Algorithm::RS256));
        validation.algorithms = algorithms.clone();
        validation.leeway = s.leeway.as_secs();
        validation.validate_nbf = true;
        // jsonwebtoken checks `iss` and `aud` only when the token has them: a configured one
        // must also be present, or a token minted for no one in particular would pass.
        let mut required = vec!["exp"];
        if let Some(iss) = &s.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        match &s.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Self {
            name: name.to_string(),
            algorithms,
            keys: s.keys,
            one_issuer: s.issuer.is_some(),
            validation,
            require_roles: s.require_roles,
            roles_claim: s.roles_claim,
            forward: Forward::new(&s.forward_claims),
            verified: Verified::new(s.leeway.as_secs()),
        }
    }

    /// [`Jwt::verify`], remembered: a token seen and verified before is only checked for
    /// time again.
    pub fn verify_cached(&self, token: &str) -> Result<Arc<Value>, (&'static str, String)> {
        if token.len() > jwt_cache::MAX_TOKEN {
            return self.verify(token).map(Arc::new);
        }
        let digest = jwt_cache::digest(token);
        if let Some(claims) = self
            .verified
            .get(&digest, jsonwebtoken::get_current_timestamp())
        {
            return Ok(claims);
        }
        let claims = Arc::new(self.verify(token)?);
        self.verified.put(digest, claims.clone());
        Ok(claims)
    }

    /// The verified claims of `token`, or why not.
    pub fn verify(&self, token: &str) -> Result<Value, (&'static str, String)> {
        let head = jsonwebtoken::decode_header(token).map_err(|e| reason(&e))?;
        refuse_critical(token)?;
        if !self.algorithms.contains(&head.alg) {
            return Err((
                "bad_algorithm",
                format!("algorithm {:?} is not accepted", head.alg),
            ));
        }
        let key = match &self.keys {
            Keys::One(k) => k,
            Keys::Set(set) => set
                .iter()
                .find(|(kid, _)| head.kid.is_some() && *kid == head.kid)
                .or_else(|| (set.len() == 1 && head.kid.is_none()).then(|| &set[0]))
                .map(|(_, k)| k)
                .ok_or(("unknown_key", "no key with the token's kid".to_string()))?,
        };
        let claims = jsonwebtoken::decode::<Value>(token, key, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| reason(&e))?;
        if self.one_issuer && !claims.get("iss").is_some_and(Value::is_string) {
            return Err(("bad_issuer", "wrong issuer".into()));
        }
        Ok(claims)
    }

    fn has_role(&self, claims: &Value) -> bool {
        if self.require_roles.is_empty() {
            return true;
        }
        let held: Vec<&str> = match claims.get(&self.roles_claim) {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            Some(Value::String(s)) => s.split_whitespace().collect(),
            _ => Vec::new(),
        };
        self.require_roles
            .iter()
            .any(|r| held.contains(&r.as_str()))
    }
}

/// RFC 7515 §4.1.11: a recipient must refuse a token whose header lists, under `crit`,
/// an extension it does not understand. lb understands none, so any `crit` refuses the
/// token, whatever its form (an empty list and a non-list are invalid anyway). jsonwebtoken
/// ignores the member, hence this look at the header's JSON; the segment is found as
/// jsonwebtoken finds it, and a header that does not read as a JSON object refuses too.
fn refuse_critical(token: &str) -> Result<(), (&'static str, String)> {
    use base64::Engine;
    let malformed = || ("malformed", "the token cannot be read".to_string());
    let (message, _) = token.rsplit_once('.').ok_or_else(malformed)?;
    let (header, _) = message.rsplit_once('.').ok_or_else(malformed)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| malformed())?;
    let fields: serde_json::Map<String, Value> =
        serde_json::from_slice(&json).map_err(|_| malformed())?;
    match fields.contains_key("crit") {
        true => Err((
            "critical_extension",
            "the token needs an extension lb does not understand (crit)".to_string(),
        )),
        false => Ok(()),
    }
}

pub use super::claims::claim_text;

impl Policy for Jwt {
    fn request(&self, info: &mut RequestInfo, headers: &mut HeaderMap) -> Result<(), Refusal> {
        // A client must not pass claims off as verified ones.
        self.forward.strip(headers);
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let Some(token) = token else {
            auth_failure(&self.name, "missing");
            return Err(refuse_with(
                401,
                "a bearer token is required",
                &[(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
            ));
        };
        let claims = match self.verify_cached(token) {
            Ok(c) => c,
            Err((why, description)) => {
                auth_failure(&self.name, why);
                let challenge = HeaderValue::from_str(&format!(
                    "Bearer error=\"invalid_token\", error_description=\"{description}\""
                ))
                .unwrap_or(HeaderValue::from_static("Bearer error=\"invalid_token\""));
                return Err(refuse_with(
                    401,
                    &description,
                    &[(header::WWW_AUTHENTICATE, challenge)],
                ));
            }
        };
        if !self.has_role(&claims) {
            auth_failure(&self.name, "forbidden");
            let challenge = HeaderValue::from_static("Bearer error=\"insufficient_scope\"");
            return Err(refuse_with(
                403,
                "the token does not grant a role this route needs",
                &[(header::WWW_AUTHENTICATE, challenge)],
            ));
        }
        self.forward.apply(&claims, headers);
        info.claims = Some(claims);
        Ok(())
    }
}
