//! What a login or refresh response means, and how long to wait before retrying one.

use crate::proto::{EndReason, error_code};

/// A login or refresh response as the web layer read it (after `JSON.parse`, if the body was
/// JSON). Fields the body did not have, or had with the wrong type, are `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RefreshReply {
    pub status: u16,
    pub access_token: Option<String>,
    pub token_type: Option<String>,
    pub expires_in: Option<f64>,
    pub error: Option<String>,
    /// `exp - iat` of the access token, if it is a JWT with numeric ones: the lifetime when
    /// `expires_in` is missing.
    pub claims_lifetime: Option<f64>,
}

/// A failure after which the session may well still be alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transient {
    /// `fetch` rejected: offline, DNS, connection reset, CORS failure, a lost response.
    Network,
    /// No answer within the refresh timeout.
    Timeout,
    /// 408, 429 or 5xx.
    Status(u16),
}

#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RefreshOutcome {
    /// A usable access token and its lifetime, measured from now on the local clock.
    Token {
        access_token: String,
        lifetime_secs: f64,
    },
    /// The server says the session is over.
    Ended(EndReason),
    /// Try again later; the session is kept.
    Transient(Transient),
    /// An answer the protocol does not allow (a 200 without a usable token, a 403 because the
    /// CSRF header is misconfigured, another 4xx). The session is kept; callers get
    /// `RefreshError`.
    Unexpected(u16),
    /// The DPoP proof was refused (`invalid_dpop_proof`, `use_dpop_nonce`; after its one retry):
    /// nothing changed on the server. A live session is kept (callers get `RefreshError`: an
    /// injected script's proof must not end it); a page-load guess is over, quietly: the
    /// cookie's session is bound to a key this page does not have.
    ProofRefused(u16),
}

/// A year: no access token lives longer, whatever `expires_in` says.
const MAX_LIFETIME_SECS: f64 = 365.0 * 86_400.0;

/// The token's lifetime from `expires_in`, or else from its claims. Measured from the moment
/// the token is received, so a client clock that is hours off changes nothing.
pub fn lifetime_secs(expires_in: Option<f64>, claims_lifetime: Option<f64>) -> Option<f64> {
    let usable = |s: &f64| s.is_finite() && *s > 0.0;
    expires_in
        .filter(usable)
        .or(claims_lifetime.filter(usable))
        .map(|s| s.min(MAX_LIFETIME_SECS))
}

/// A token from another tab lives what the message says, never longer than the token's own
/// claims say (`exp - iat`): a script that posts the page's real token with a year's lifetime
/// must not keep the tabs from refreshing it, nor a banking-mode session from ending.
pub fn peer_lifetime_secs(stated: f64, claims_lifetime: Option<f64>) -> f64 {
    // A stated lifetime that is no number stays one (the machine drops it): `min` would
    // make NaN or infinity the claims' figure.
    match claims_lifetime.filter(|c| c.is_finite()) {
        Some(c) if stated.is_finite() => stated.min(c),
        _ => stated,
    }
}

impl RefreshReply {
    /// The outcome for a Bearer client ([`RefreshReply::classify_for`] with `dpop: false`).
    pub fn classify(self) -> RefreshOutcome {
        self.classify_for(false)
    }

    /// `dpop`: the client sent a DPoP proof, so only a `token_type` of `DPoP` is a token (a
    /// server that answers `Bearer` did not bind the session: no silent downgrade). Without
    /// DPoP, `Bearer` or no `token_type` at all.
    pub fn classify_for(self, dpop: bool) -> RefreshOutcome {
        match self.status {
            200 => {
                let bearer = match self.token_type.as_deref() {
                    Some(t) if dpop => t.eq_ignore_ascii_case("dpop"),
                    None => !dpop,
                    Some(t) => t.eq_ignore_ascii_case("bearer"),
                };
                let token = self.access_token.filter(|t| is_token_shaped(t));
                match (token, lifetime_secs(self.expires_in, self.claims_lifetime)) {
                    (Some(access_token), Some(lifetime_secs)) if bearer => RefreshOutcome::Token {
                        access_token,
                        lifetime_secs,
                    },
                    _ => RefreshOutcome::Unexpected(200),
                }
            }
            // RFC 6749 answers an invalid grant with 400; tokenwarden with 401. Only the
            // protocol's own words end a session: a 401 without them (a gateway's or proxy's
            // page, an unknown code) and a refused proof (e.g. an injected script's) do not.
            400 | 401 => match self.error.as_deref() {
                Some(error_code::TokenReused) => RefreshOutcome::Ended(EndReason::TokenReused),
                Some(error_code::InvalidGrant) => RefreshOutcome::Ended(EndReason::InvalidGrant),
                Some(e) if is_proof_refusal(e) => RefreshOutcome::ProofRefused(self.status),
                _ => RefreshOutcome::Unexpected(self.status),
            },
            408 | 429 | 500..=599 => RefreshOutcome::Transient(Transient::Status(self.status)),
            other => RefreshOutcome::Unexpected(other),
        }
    }
}

/// Whether `error` says the DPoP proof was refused: a newer nonce is wanted, or the proof (its
/// time, its key) was not accepted. Nothing changed on the server.
pub fn is_proof_refusal(error: &str) -> bool {
    matches!(
        error,
        error_code::UseDpopNonce | error_code::InvalidDpopProof
    )
}

/// Non-empty, at most 16 KiB, visible ASCII only (anything else would make `Headers.set`
/// throw): what a token from the server or from another tab must look like to be used.
pub fn is_token_shaped(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 16 * 1024
        && token.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// Delay before retry number `attempt` (1-based) of a refresh that failed transiently, or
/// `None` when it is time to give up and tell the callers. `jitter` in [0, 1) spreads clients
/// that failed together.
pub fn backoff_ms(attempt: u32, jitter: f64) -> Option<f64> {
    let base = match attempt {
        1 => 250.0,
        2 => 1000.0,
        _ => return None,
    };
    Some(base * (1.0 + 0.5 * jitter.clamp(0.0, 1.0)))
}

/// How long after `failures` refreshes in a row failed (without ending the session) the next
/// may start: 10 s, doubling, at most 60 s; `jitter` in [0, 1) adds up to half, so tabs and
/// browsers that failed together do not come back together.
pub fn cooldown_ms(failures: u32, jitter: f64) -> f64 {
    let doubled = 10_000.0 * f64::from(1u32 << failures.clamp(1, 4).saturating_sub(1));
    doubled.min(COOLDOWN_CAP_MS) * (1.0 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// The longest wait between refreshes that fail (before jitter).
pub const COOLDOWN_CAP_MS: f64 = 60_000.0;

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(token: &str, expires_in: Option<f64>) -> RefreshReply {
        RefreshReply {
            status: 200,
            access_token: Some(token.into()),
            token_type: Some("Bearer".into()),
            expires_in,
            ..Default::default()
        }
    }

    #[test]
    fn a_200_with_token_and_expires_in_is_a_token() {
        assert_eq!(
            ok("abc", Some(600.0)).classify(),
            RefreshOutcome::Token {
                access_token: "abc".into(),
                lifetime_secs: 600.0
            }
        );
    }

    #[test]
    fn the_lifetime_falls_back_to_the_claims_then_gives_up() {
        let mut r = ok("abc", None);
        r.claims_lifetime = Some(300.0);
        assert_eq!(
            r.clone().classify(),
            RefreshOutcome::Token {
                access_token: "abc".into(),
                lifetime_secs: 300.0
            }
        );
        r.claims_lifetime = None;
        assert_eq!(r.classify(), RefreshOutcome::Unexpected(200));
    }

    #[test]
    fn nonsense_lifetimes_are_ignored_or_capped() {
        for bad in [0.0, -5.0, f64::NAN, f64::INFINITY] {
            assert_eq!(lifetime_secs(Some(bad), None), None, "{bad}");
        }
        assert_eq!(lifetime_secs(Some(-1.0), Some(60.0)), Some(60.0));
        assert_eq!(lifetime_secs(Some(1e12), None), Some(MAX_LIFETIME_SECS));
    }

    #[test]
    fn a_200_without_a_usable_token_is_unexpected_not_a_logout() {
        let cases = [
            RefreshReply {
                status: 200,
                ..Default::default()
            },
            ok("", Some(600.0)),
            ok("has space", Some(600.0)),
            ok("line\nbreak", Some(600.0)),
            ok(&"x".repeat(20_000), Some(600.0)),
            RefreshReply {
                token_type: Some("MAC".into()),
                ..ok("abc", Some(600.0))
            },
        ];
        for case in cases {
            assert_eq!(
                case.clone().classify(),
                RefreshOutcome::Unexpected(200),
                "{case:?}"
            );
        }
    }

    #[test]
    fn token_type_is_optional_and_case_insensitive() {
        let r = RefreshReply {
            token_type: None,
            ..ok("abc", Some(1.0))
        };
        assert!(matches!(r.classify(), RefreshOutcome::Token { .. }));
        let r = RefreshReply {
            token_type: Some("bearer".into()),
            ..ok("abc", Some(1.0))
        };
        assert!(matches!(r.classify(), RefreshOutcome::Token { .. }));
    }

    #[test]
    fn with_dpop_only_a_dpop_token_type_is_a_token() {
        let dpop = |tt: Option<&str>| RefreshReply {
            token_type: tt.map(Into::into),
            ..ok("abc", Some(60.0))
        };
        assert!(matches!(
            dpop(Some("DPoP")).classify_for(true),
            RefreshOutcome::Token { .. }
        ));
        assert!(matches!(
            dpop(Some("dpop")).classify_for(true),
            RefreshOutcome::Token { .. }
        ));
        for tt in [Some("Bearer"), None, Some("MAC")] {
            assert_eq!(
                dpop(tt).classify_for(true),
                RefreshOutcome::Unexpected(200),
                "{tt:?}"
            );
        }
        // A bearer client does not take a bound token it cannot use.
        assert_eq!(
            dpop(Some("DPoP")).classify_for(false),
            RefreshOutcome::Unexpected(200)
        );
    }

    #[test]
    fn a_refused_proof_is_told_apart_and_never_ends_the_session() {
        assert_eq!(
            status(401, Some("invalid_dpop_proof")),
            RefreshOutcome::ProofRefused(401)
        );
        assert_eq!(
            status(400, Some("use_dpop_nonce")),
            RefreshOutcome::ProofRefused(400)
        );
        assert_eq!(
            status(403, Some("invalid_dpop_proof")),
            RefreshOutcome::Unexpected(403)
        );
    }

    #[test]
    fn a_401_without_the_protocols_words_never_ends_the_session() {
        // A gateway's HTML page (no JSON: no error), or a code the protocol does not have.
        for error in [None, Some("invalid_token"), Some("unauthorized")] {
            assert_eq!(
                status(401, error),
                RefreshOutcome::Unexpected(401),
                "{error:?}"
            );
        }
        assert_eq!(
            status(401, Some("invalid_grant")),
            RefreshOutcome::Ended(EndReason::InvalidGrant)
        );
        assert_eq!(
            status(400, Some("token_reused")),
            RefreshOutcome::Ended(EndReason::TokenReused)
        );
    }

    fn status(status: u16, error: Option<&str>) -> RefreshOutcome {
        RefreshReply {
            status,
            error: error.map(Into::into),
            ..Default::default()
        }
        .classify()
    }

    #[test]
    fn the_server_ending_the_session_is_told_apart_from_everything_else() {
        assert_eq!(
            status(401, Some("invalid_grant")),
            RefreshOutcome::Ended(EndReason::InvalidGrant)
        );
        assert_eq!(
            status(401, Some("token_reused")),
            RefreshOutcome::Ended(EndReason::TokenReused)
        );
        assert_eq!(status(401, None), RefreshOutcome::Unexpected(401));
        assert_eq!(
            status(400, Some("invalid_grant")),
            RefreshOutcome::Ended(EndReason::InvalidGrant)
        );
        assert_eq!(
            status(400, Some("invalid_request")),
            RefreshOutcome::Unexpected(400)
        );
    }

    #[test]
    fn server_trouble_is_transient() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(
                status(s, None),
                RefreshOutcome::Transient(Transient::Status(s))
            );
        }
    }

    #[test]
    fn a_forbidden_refresh_is_a_configuration_problem_not_a_logout() {
        assert_eq!(
            status(403, Some("csrf_header_missing")),
            RefreshOutcome::Unexpected(403)
        );
        assert_eq!(status(404, None), RefreshOutcome::Unexpected(404));
        assert_eq!(status(302, None), RefreshOutcome::Unexpected(302));
    }

    #[test]
    fn a_peers_lifetime_is_never_longer_than_the_tokens_claims() {
        assert_eq!(peer_lifetime_secs(31_536_000.0, Some(600.0)), 600.0);
        assert_eq!(peer_lifetime_secs(300.0, Some(600.0)), 300.0);
        // No claims to go by (not a JWT, or no exp): what the message says.
        assert_eq!(peer_lifetime_secs(300.0, None), 300.0);
        assert_eq!(peer_lifetime_secs(300.0, Some(f64::NAN)), 300.0);
        // What is no lifetime stays none.
        assert_eq!(
            peer_lifetime_secs(f64::INFINITY, Some(600.0)),
            f64::INFINITY
        );
        assert!(peer_lifetime_secs(f64::NAN, Some(600.0)).is_nan());
    }

    #[test]
    fn failed_refreshes_wait_longer_each_time_up_to_a_minute_and_a_half() {
        let waits: Vec<f64> = (1..=6).map(|n| cooldown_ms(n, 0.0)).collect();
        assert_eq!(
            waits,
            [10_000.0, 20_000.0, 40_000.0, 60_000.0, 60_000.0, 60_000.0]
        );
        assert_eq!(cooldown_ms(0, 0.0), 10_000.0);
        assert_eq!(cooldown_ms(u32::MAX, 0.999), 60_000.0 * 1.4995);
        assert_eq!(cooldown_ms(4, 7.0), 90_000.0);
    }

    #[test]
    fn retries_back_off_then_stop() {
        assert_eq!(backoff_ms(1, 0.0), Some(250.0));
        assert_eq!(backoff_ms(2, 0.0), Some(1000.0));
        assert_eq!(backoff_ms(2, 1.0), Some(1500.0));
        assert_eq!(backoff_ms(2, 7.0), Some(1500.0));
        assert_eq!(backoff_ms(3, 0.0), None);
    }
}
