//! `kind = "basic_auth"`: HTTP Basic authentication (RFC 7617) against bcrypt hashes, from
//! the config's `users` and an htpasswd file (`htpasswd -B`), read when the config loads.
//!
//! bcrypt is slow on purpose (tens of milliseconds); lb runs it off the worker threads
//! (`spawn_blocking`) so other connections are not held up, and remembers credentials that
//! verified (a bounded set of SHA-256 digests of user, password and hash) so a client sending
//! the same credentials on every request pays it once. Failures are never remembered.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use http::{header, HeaderMap, HeaderValue};
use lb_core::config::{is_bcrypt, Diagnostic, FileRef};
use sha2::{Digest, Sha256};

use super::{auth_failure, refuse_with, Policy, Refusal, RequestInfo, Waiting};

/// Credentials remembered as verified, at most.
const REMEMBERED: usize = 10_000;

/// Reads an htpasswd file: `user:hash` lines, `#` comments; bcrypt hashes only.
pub fn read_htpasswd(f: &FileRef, diags: &mut Vec<Diagnostic>) -> Vec<(String, String)> {
    let text = match std::fs::read_to_string(&f.path) {
        Ok(t) => t,
        Err(e) => {
            diags.push(
                Diagnostic::error(format!("{}: cannot read: {e}", f.path))
                    .at(f.span.clone())
                    .key(f.key.clone()),
            );
            return Vec::new();
        }
    };
    let mut users = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once(':') {
            Some((user, hash)) if !user.is_empty() && is_bcrypt(hash) => users.push((user.to_string(), hash.to_string())),
            _ => diags.push(
                Diagnostic::error(format!(
                    "{}:{}: expected USER:BCRYPT-HASH (htpasswd -B); other hash kinds are not accepted",
                    f.path,
                    n + 1
                ))
                .at(f.span.clone())
                .key(f.key.clone()),
            ),
        }
    }
    users
}

#[derive(Debug)]
pub struct BasicAuth {
    name: String,
    users: Arc<HashMap<String, String>>,
    challenge: HeaderValue,
    verified: Arc<Mutex<HashSet<[u8; 32]>>>,
}

impl BasicAuth {
    pub fn new(name: &str, users: Vec<(String, String)>, realm: &str) -> Self {
        Self {
            name: name.to_string(),
            users: Arc::new(users.into_iter().collect()),
            challenge: HeaderValue::from_str(&format!(
                "Basic realm=\"{realm}\", charset=\"UTF-8\""
            ))
            .unwrap_or(HeaderValue::from_static("Basic")),
            verified: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    fn refuse(&self, why: &'static str, message: &str) -> Refusal {
        auth_failure(&self.name, why);
        refuse_with(
            401,
            message,
            &[(header::WWW_AUTHENTICATE, self.challenge.clone())],
        )
    }

    async fn check(&self, info: &mut RequestInfo, headers: &mut HeaderMap) -> Result<(), Refusal> {
        let Some((user, password)) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(credentials)
        else {
            return Err(self.refuse("missing", "credentials are required"));
        };
        let Some(hash) = self.users.get(&user).cloned() else {
            return Err(self.refuse("invalid", "wrong user name or password"));
        };
        let digest: [u8; 32] = Sha256::new()
            .chain_update(user.as_bytes())
            .chain_update([0])
            .chain_update(password.as_bytes())
            .chain_update([0])
            .chain_update(hash.as_bytes())
            .finalize()
            .into();
        let known = lock(&self.verified).contains(&digest);
        let ok = known
            || tokio::task::spawn_blocking(move || {
                bcrypt::verify(password, &hash).unwrap_or(false)
            })
            .await
            .unwrap_or(false);
        if !ok {
            return Err(self.refuse("invalid", "wrong user name or password"));
        }
        if !known {
            let mut set = lock(&self.verified);
            if set.len() >= REMEMBERED {
                set.clear();
            }
            set.insert(digest);
        }
        headers.remove(header::AUTHORIZATION);
        info.consumer = Some(user);
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `Basic base64(user:password)`.
pub fn credentials(value: &str) -> Option<(String, String)> {
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64_decode(token.trim())?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

impl Policy for BasicAuth {
    fn request(&self, _info: &mut RequestInfo, _headers: &mut HeaderMap) -> Result<(), Refusal> {
        Ok(())
    }

    fn request_async<'a>(
        &'a self,
        info: &'a mut RequestInfo,
        headers: &'a mut HeaderMap,
    ) -> Option<Waiting<'a>> {
        Some(Box::pin(self.check(info, headers)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_decoded() {
        // "aladdin:opensesame" (RFC 7617's example is "Aladdin:open sesame").
        assert_eq!(
            credentials("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
            Some(("Aladdin".into(), "open sesame".into()))
        );
        assert_eq!(
            credentials("basic dXNlcjpwYTpzcw=="),
            Some(("user".into(), "pa:ss".into())),
            "the password may hold ':'"
        );
        assert_eq!(credentials("Bearer abc"), None);
        assert_eq!(credentials("Basic !!!"), None);
        assert_eq!(credentials("Basic dXNlcg=="), None, "no ':'");
    }
}
