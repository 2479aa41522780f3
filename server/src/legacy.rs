//! Lazy migration: the old backend checks the password of a user this server does not know yet
//! (`--legacy-login-url`), and a user it vouches for is imported with that password.
//!
//! The request: `POST URL` with `{"email", "password"}` as JSON and the shared secret in
//! `X-Tokenwarden-Legacy-Secret`, over HTTPS (or plain HTTP to a loopback address), with a
//! short timeout. The answer: 200 with `{"id"?, "name"?, "email_verified"?, "roles"?,
//! "claims"?}` vouches for the user; 401, 403 or 404 refuse the password; anything else (a 5xx,
//! a timeout, a refused connection, a body that does not parse) means the old backend is
//! unavailable, which is a clear error for the client and never a sign-in.

use serde::Deserialize;
use serde_json::{Map, Value};

pub use crate::config::LegacySettings;

/// The header carrying the shared secret.
pub const SECRET_HEADER: &str = "x-tokenwarden-legacy-secret";

/// What the old backend says about a user (its 200 body).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
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
}

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
        if settings.secret.len() < 16 {
            return Err("the legacy backend's shared secret must be at least 16 characters".into());
        }
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("the legacy backend's HTTP client: {e}"))?;
        Ok(Legacy { settings, http })
    }

    /// Asks whether `password` is the password of `email`.
    pub async fn check(&self, email: &str, password: &str) -> LegacyAnswer {
        let sent = self
            .http
            .post(&self.settings.url)
            .header(SECRET_HEADER, &self.settings.secret)
            .json(&serde_json::json!({ "email": email, "password": password }))
            .send()
            .await;
        let res = match sent {
            Ok(res) => res,
            Err(e) if e.is_timeout() => return LegacyAnswer::Unavailable("timed out".into()),
            Err(e) => return LegacyAnswer::Unavailable(format!("request failed: {e}")),
        };
        match res.status().as_u16() {
            200 => {}
            401 | 403 | 404 => return LegacyAnswer::Refused,
            other => return LegacyAnswer::Unavailable(format!("status {other}")),
        }
        let profile: Profile = match res.json().await {
            Ok(p) => p,
            Err(e) => return LegacyAnswer::Unavailable(format!("body: {e}")),
        };
        if profile.id.as_deref().is_some_and(|id| !valid_id(id))
            || profile
                .name
                .as_deref()
                .is_some_and(|n| n.trim().is_empty() || n.len() > 100)
            || !profile.roles.iter().all(|r| valid_role(r))
            || crate::tokens::check_custom_claims(&profile.claims).is_err()
        {
            return LegacyAnswer::Unavailable("a profile this server cannot store".into());
        }
        LegacyAnswer::Vouched(profile)
    }
}
