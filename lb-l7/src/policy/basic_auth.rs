//! `kind = "basic_auth"`: HTTP Basic authentication (RFC 7617) against bcrypt hashes, from
//! the config's `users` and an htpasswd file (`htpasswd -B`), read when the config loads.
//!
//! bcrypt is slow on purpose (tens of milliseconds); lb runs it off the worker threads
//! (`spawn_blocking`) so other connections are not held up, and remembers credentials that
//! verified (a bounded set of SHA-256 digests of user, password and hash) so a client sending
//! the same credentials on every request pays it once.
//!
//! Guessing is bounded by a failure budget (budget.rs): past it, a guess is answered 401
//! without bcrypt (`lb_auth_failures_total{reason="over_budget"}`) until its window ends.
//! An unknown user name costs what a known one does: its password is verified against a
//! configured user's hash of the most common cost and the outcome thrown away, and it
//! spends the same budget, so neither the time taken nor the answers tell names apart.

mod budget;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::{header, HeaderMap, HeaderValue};
use lb_core::config::{is_bcrypt, Diagnostic, FileRef};
use sha2::{Digest, Sha256};

use super::{auth_failure, refuse_with, Policy, Refusal, RequestInfo, Waiting};

/// Credentials remembered as verified, at most.
const REMEMBERED: usize = 10_000;

/// How many bytes of a password bcrypt reads.
const BCRYPT_READS: usize = 72;

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
    /// What an unknown user's password is verified against (`None` with no users: then
    /// there is no name to give away).
    stand_in: Option<String>,
    challenge: HeaderValue,
    verified: Arc<Mutex<HashSet<[u8; 32]>>>,
    budget: Mutex<budget::Budget>,
    /// bcrypt verifications run, for tests.
    verifications: Arc<AtomicU64>,
}

/// The hash of a user whose cost is the most common among `users` (the higher on a tie):
/// verifying an unknown name against it takes as long as most known names take.
fn stand_in(users: &HashMap<String, String>) -> Option<String> {
    let cost = |h: &str| h.get(4..6).and_then(|c| c.parse::<u32>().ok()).unwrap_or(0);
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for h in users.values() {
        *counts.entry(cost(h)).or_default() += 1;
    }
    let (common, _) = counts.into_iter().max_by_key(|&(c, n)| (n, c))?;
    users.values().filter(|h| cost(h) == common).min().cloned()
}

impl BasicAuth {
    pub fn new(name: &str, users: Vec<(String, String)>, realm: &str) -> Self {
        let users: HashMap<String, String> = users.into_iter().collect();
        Self {
            name: name.to_string(),
            stand_in: stand_in(&users),
            users: Arc::new(users),
            budget: Mutex::new(budget::Budget::new(budget::LIMITS)),
            verifications: Arc::new(AtomicU64::new(0)),
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
        let known_user = self.users.get(&user).cloned();
        // The password as bcrypt reads it (72 bytes at most): passwords that differ only past
        // that are one credential, remembered once. Otherwise an account with a long password
        // buys a bcrypt run with every new suffix, outside any budget.
        let read = &password.as_bytes()[..password.len().min(BCRYPT_READS)];
        let digest: [u8; 32] = Sha256::new()
            .chain_update(user.as_bytes())
            .chain_update([0])
            .chain_update(read)
            .chain_update([0])
            .chain_update(known_user.as_deref().unwrap_or("").as_bytes())
            .finalize()
            .into();
        // Credentials that verified before pass without bcrypt or budget: a signed-in user
        // keeps working while someone guesses at the same name.
        let known = known_user.is_some() && lock(&self.verified).contains(&digest);
        let attempt = lock(&self.budget).attempt(&user, info.client);
        if !known && !lock(&self.budget).spend(attempt, Instant::now()) {
            return Err(self.refuse("over_budget", "wrong user name or password"));
        }
        let Some(hash) = known_user.clone().or_else(|| self.stand_in.clone()) else {
            return Err(self.refuse("invalid", "wrong user name or password"));
        };
        let count = self.verifications.clone();
        let ok = known
            || tokio::task::spawn_blocking(move || {
                let ok = bcrypt::verify(password, &hash);
                count.fetch_add(1, Ordering::Relaxed);
                ok.unwrap_or(false)
            })
            .await
            .unwrap_or(false);
        // An unknown name never passes, whatever the stand-in's hash said.
        if !ok || known_user.is_none() {
            return Err(self.refuse("invalid", "wrong user name or password"));
        }
        if !known {
            lock(&self.budget).verified(attempt);
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

    fn basic(user: &str, password: &str) -> HeaderMap {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("Basic {token}").parse().expect("value"),
        );
        h
    }

    async fn try_login(p: &BasicAuth, user: &str, password: &str, from: &str) -> Result<(), u16> {
        let mut info = RequestInfo::new(
            from.parse().expect("ip"),
            http::Method::GET,
            None,
            "/",
            None,
            "r",
        );
        let mut headers = basic(user, password);
        p.check(&mut info, &mut headers)
            .await
            .map_err(|r| r.status().as_u16())
    }

    #[test]
    fn the_stand_in_has_the_most_common_cost() {
        let hash = |cost| bcrypt::hash("x", cost).expect("hash");
        let users: HashMap<String, String> = [("a", hash(5)), ("b", hash(4)), ("c", hash(5))]
            .into_iter()
            .map(|(u, h)| (u.to_string(), h))
            .collect();
        let s = stand_in(&users).expect("a stand-in");
        assert!(s.starts_with("$2b$05$"), "{s}");
        assert!(
            bcrypt::verify("guess", &s).is_ok(),
            "a hash bcrypt runs, not an error"
        );
        assert_eq!(stand_in(&HashMap::new()), None);
    }

    #[tokio::test]
    async fn an_unknown_user_costs_a_verification_as_a_known_one_does() {
        let p = BasicAuth::new(
            "login",
            vec![("alice".into(), bcrypt::hash("wonderland", 4).expect("hash"))],
            "r",
        );
        let runs = || p.verifications.load(Ordering::Relaxed);
        assert_eq!(
            try_login(&p, "mallory", "wonderland", "192.0.2.1").await,
            Err(401)
        );
        assert_eq!(runs(), 1, "the unknown name ran bcrypt");
        assert_eq!(try_login(&p, "alice", "guess", "192.0.2.1").await, Err(401));
        assert_eq!(runs(), 2, "as the known name did");
        // The stand-in is alice's own hash: her password under another name still fails.
        assert_eq!(
            try_login(&p, "alicE", "wonderland", "192.0.2.2").await,
            Err(401)
        );
        assert_eq!(runs(), 3);
        assert_eq!(
            try_login(&p, "alice", "wonderland", "192.0.2.1").await,
            Ok(())
        );
        assert_eq!(runs(), 4);
        assert_eq!(
            try_login(&p, "alice", "wonderland", "192.0.2.1").await,
            Ok(())
        );
        assert_eq!(runs(), 4, "remembered");
    }

    #[tokio::test]
    async fn guesses_past_the_budget_run_no_bcrypt_for_known_and_unknown_names_alike() {
        let p = BasicAuth::new(
            "login",
            vec![("alice".into(), bcrypt::hash("wonderland", 4).expect("hash"))],
            "r",
        );
        let runs = || p.verifications.load(Ordering::Relaxed);
        // Alice signs in once; then someone guesses at alice and at a name that is no one's.
        assert_eq!(
            try_login(&p, "alice", "wonderland", "192.0.2.1").await,
            Ok(())
        );
        for user in ["alice", "nobody"] {
            let before = runs();
            for i in 0..20 {
                assert_eq!(
                    try_login(&p, user, &format!("guess{i}"), "198.51.100.9").await,
                    Err(401)
                );
            }
            assert_eq!(runs() - before, u64::from(budget::LIMITS.pair), "{user}");
        }
        // Alice's remembered credentials still pass, from anywhere.
        assert_eq!(
            try_login(&p, "alice", "wonderland", "198.51.100.9").await,
            Ok(())
        );
        assert_eq!(
            try_login(&p, "alice", "wonderland", "192.0.2.1").await,
            Ok(())
        );
    }

    #[tokio::test]
    async fn passwords_bcrypt_reads_alike_are_remembered_alike() {
        // bcrypt reads 72 bytes of a password: what follows changes nothing it verifies.
        let long = "m".repeat(72);
        let p = BasicAuth::new(
            "login",
            vec![("mallory".into(), bcrypt::hash(&long, 4).expect("hash"))],
            "r",
        );
        let runs = || p.verifications.load(Ordering::Relaxed);
        for i in 0..(2 * budget::LIMITS.source) {
            assert_eq!(
                try_login(&p, "mallory", &format!("{long}{i}"), "198.51.100.9").await,
                Ok(())
            );
        }
        // Each suffix was a new digest: a bcrypt each, and none of them spent the budget, so
        // one account bought as many bcrypt runs as it liked (and filled the remembered set,
        // which is emptied when full, so everyone else's were forgotten).
        assert_eq!(
            runs(),
            1,
            "one verification for one password as bcrypt reads it"
        );
    }

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
