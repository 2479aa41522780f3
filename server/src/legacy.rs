//! Lazy migration: the old backend checks the password of a user this server does not know yet
//! (`--legacy-login-url`), and a user it vouches for is imported with that password.
//!
//! The request: `POST URL` with `{"email", "password"}` as JSON and the shared secret in
//! `X-Tokenwarden-Legacy-Secret`, over HTTPS (or plain HTTP to a loopback address), with a
//! short timeout. The answer: 200 with `{"id"?, "name"?, "email_verified"?, "roles"?,
//! "claims"?}` (those members only) vouches for the user; 401, 403 or 404 refuse the password;
//! anything else (a 5xx, a timeout, a refused connection, a body that is no JSON object or has
//! another member) means the old backend is unavailable, which is a clear error for the client
//! and never a sign-in.

use serde::Deserialize;
use serde_json::{Map, Value};

pub use crate::config::LegacySettings;

/// The header carrying the shared secret.
pub const SECRET_HEADER: &str = "x-tokenwarden-legacy-secret";

/// What the old backend says about a user (its 200 body). Only these members: a 200 whose body
/// says something else (`{"success": false}`, an error of a login endpoint never written for
/// this question) is no vouching, and is answered as an old backend that fails.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Profile {
    pub id: Option<String>,
    pub name: Option<String>,
    pub email_verified: bool,
    pub roles: Vec<String>,
    pub claims: Map<String, Value>,
}

/// The old backend's verdict.
#[derive(Debug)]
pub enum LegacyAnswer {
    Vouched(Profile),
    Refused,
    /// Why (for the log): the client is told the old backend is unavailable.
    Unavailable(String),
}

#[derive(Clone)]
pub struct Legacy {
    settings: LegacySettings,
    http: reqwest::Client,
    /// At most [`AT_ONCE`] questions to the old backend at a time: a sign-in waiting for its
    /// answer holds no hashing turn (crate::password), so this is what bounds them.
    asking: std::sync::Arc<tokio::sync::Semaphore>,
}

/// Questions to the old backend at once; a sign-in that finds them all out is `Unavailable`
/// (503) at once, as when the backend itself is slow (it is, or it would have answered).
const AT_ONCE: usize = 32;

/// The longest answer read from the old backend.
const MAX_BODY: usize = 64 * 1024;

impl std::fmt::Debug for Legacy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Legacy")
            .field("url", &self.settings.url)
            .finish_non_exhaustive()
    }
}

/// An id the server can use as a `sub` (what `users import` accepts too).
pub fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:@|+".contains(&b))
}

/// A role name.
pub fn valid_role(role: &str) -> bool {
    (1..=64).contains(&role.len())
        && role
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

impl Legacy {
    /// Checks the URL (https, or http to a loopback host) and builds the client.
    pub fn new(settings: LegacySettings) -> Result<Self, String> {
        let url = reqwest::Url::parse(&settings.url)
            .map_err(|e| format!("--legacy-login-url {:?}: {e}", settings.url))?;
        let loopback = url.host_str().is_some_and(|h| {
            h == "localhost"
                || h.trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
        if !(url.scheme() == "https" || (url.scheme() == "http" && loopback)) {
            return Err(
                "--legacy-login-url must be https (or http to a loopback address): it carries \
                 passwords"
                    .into(),
            );
        }
        // Whatever the URL holds goes into errors and the log: no credentials in it.
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "--legacy-login-url must not hold credentials: the shared secret file is for that"
                    .into(),
            );
        }
        if settings.secret.len() < 16 {
            return Err("the legacy backend's shared secret must be at least 16 characters".into());
        }
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            // Passwords go to this URL and nowhere else: not through an `HTTP_PROXY` either.
            .no_proxy()
            .build()
            .map_err(|e| format!("the legacy backend's HTTP client: {e}"))?;
        Ok(Legacy {
            settings,
            http,
            asking: std::sync::Arc::new(tokio::sync::Semaphore::new(AT_ONCE)),
        })
    }

    /// Asks whether `password` is the password of `email`.
    pub async fn check(&self, email: &str, password: &str) -> LegacyAnswer {
        let Ok(_room) = self.asking.try_acquire() else {
            return LegacyAnswer::Unavailable("too many questions to it at once".into());
        };
        let sent = self
            .http
            .post(&self.settings.url)
            .header(SECRET_HEADER, &self.settings.secret)
            .json(&serde_json::json!({ "email": email, "password": password }))
            .send()
            .await;
        let mut res = match sent {
            Ok(res) => res,
            Err(e) if e.is_timeout() => return LegacyAnswer::Unavailable("timed out".into()),
            Err(e) => {
                let e = e.without_url();
                return LegacyAnswer::Unavailable(format!("request failed: {e}"));
            }
        };
        match res.status().as_u16() {
            200 => {}
            401 | 403 | 404 => return LegacyAnswer::Refused,
            other => return LegacyAnswer::Unavailable(format!("status {other}")),
        }
        // A profile is a few hundred bytes: read at most MAX_BODY of whatever comes.
        let mut body = Vec::new();
        loop {
            match res.chunk().await {
                Ok(Some(chunk)) if body.len() + chunk.len() <= MAX_BODY => {
                    body.extend_from_slice(&chunk);
                }
                Ok(Some(_)) => return LegacyAnswer::Unavailable("a body over 64 KiB".into()),
                Ok(None) => break,
                Err(e) => {
                    let e = e.without_url();
                    return LegacyAnswer::Unavailable(format!("body: {e}"));
                }
            }
        }
        // An object: serde would also read a struct from an array (`[]`: every member absent).
        let object = match serde_json::from_slice::<Value>(&body) {
            Ok(v) if v.is_object() => v,
            Ok(_) => return LegacyAnswer::Unavailable("body: not a JSON object".into()),
            Err(e) => return LegacyAnswer::Unavailable(format!("body: {e}")),
        };
        let mut profile: Profile = match serde_json::from_value(object) {
            Ok(p) => p,
            Err(e) => return LegacyAnswer::Unavailable(format!("body: {e}")),
        };
        // A name this server cannot show is left out (the address's local part stands in), as
        // an import would refuse it: never a sign-in refused for ever over a display name.
        profile.name = profile
            .name
            .map(|n| n.trim().to_owned())
            .filter(|n| crate::store::valid_name(n));
        if profile.id.as_deref().is_some_and(|id| !valid_id(id))
            || !profile.roles.iter().all(|r| valid_role(r))
            || crate::tokens::check_custom_claims(&profile.claims).is_err()
        {
            return LegacyAnswer::Unavailable("a profile this server cannot store".into());
        }
        LegacyAnswer::Vouched(profile)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// The URL passwords go to: https (or http to a loopback address), and no credentials in
    /// it (they would be in every error logged).
    #[test]
    fn the_url_is_https_or_loopback_and_holds_no_credentials() {
        let with = |url: &str| {
            Legacy::new(LegacySettings {
                url: url.into(),
                secret: "a-shared-secret-of-16+".into(),
                timeout: Duration::from_secs(1),
            })
            .map(|_| ())
        };
        assert!(with("https://old.example/check").is_ok());
        assert!(with("http://127.0.0.1:9/check").is_ok());
        assert!(with("http://old.example/check").is_err());
        let e = with("https://admin:hunter2@old.example/check").unwrap_err();
        assert!(e.contains("credentials"), "{e}");
        let settings = LegacySettings {
            url: "https://old.example/check".into(),
            secret: "a-shared-secret-of-16+".into(),
            timeout: Duration::from_secs(1),
        };
        let shown = format!("{settings:?} {:?}", Legacy::new(settings.clone()));
        assert!(!shown.contains("a-shared-secret"), "{shown}");
    }

    /// Sign-ins of unknown addresses hold no hashing turn while the old backend answers
    /// (crate::password); what bounds them is this: with [`AT_ONCE`] questions out to a backend
    /// that does not answer, the next one is `Unavailable` at once, not one more connection.
    #[tokio::test]
    async fn no_more_than_so_many_questions_are_out_at_once() {
        use axum::routing::post;
        let gate = Arc::new(tokio::sync::Notify::new());
        let asked = Arc::new(AtomicUsize::new(0));
        let (g, a) = (gate.clone(), asked.clone());
        let app = axum::Router::new().route(
            "/check",
            post(move || async move {
                a.fetch_add(1, Ordering::SeqCst);
                g.notified().await;
                axum::http::StatusCode::UNAUTHORIZED
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/check", listener.local_addr().unwrap());
        let backend = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let legacy = Legacy::new(LegacySettings {
            url,
            secret: "legacy-shared-secret-0123".into(),
            timeout: Duration::from_secs(30),
        })
        .unwrap();
        let out: Vec<_> = (0..AT_ONCE)
            .map(|i| {
                let l = legacy.clone();
                tokio::spawn(async move { l.check(&format!("u{i}@x.test"), "pw").await })
            })
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while asked.load(Ordering::SeqCst) < AT_ONCE {
            assert!(
                std::time::Instant::now() < deadline,
                "the backend was not asked"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(matches!(
            legacy.check("one-more@x.test", "pw").await,
            LegacyAnswer::Unavailable(_)
        ));
        assert_eq!(asked.load(Ordering::SeqCst), AT_ONCE, "never sent");
        for _ in 0..AT_ONCE {
            gate.notify_one();
        }
        for o in out {
            assert!(matches!(o.await.unwrap(), LegacyAnswer::Refused));
        }
        // Room again.
        gate.notify_one();
        let again = legacy.check("later@x.test", "pw");
        let (answer, ()) = tokio::join!(again, async {
            while asked.load(Ordering::SeqCst) < AT_ONCE + 1 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            gate.notify_one();
        });
        assert!(matches!(answer, LegacyAnswer::Refused));
        backend.abort();
    }
}
