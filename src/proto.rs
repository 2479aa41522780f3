//! Protocol words, typed once. The client and the reference server (`tokenwarden-server`
//! depends on this crate natively) both use these, so a typo fails to compile instead of
//! failing in production. Each enum has `as_str` and `parse`; the codes also have a module of
//! constants (`error_code::TokenReused`), so that code matching on a word uses the enum's text
//! in its patterns (no literal, and no comparison function in the `.wasm`).

macro_rules! words {
    ($(#[$doc:meta])* $name:ident in $consts:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)+ }) => {
        words! { $(#[$doc])* $name { $($(#[$vdoc])* $variant = $text,)+ } }

        #[doc = concat!("Each [`", stringify!($name), "`]'s word, as a constant to match on.")]
        #[allow(non_upper_case_globals)]
        pub mod $consts {
            $(pub const $variant: &str = $text;)+
        }
    };
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The word on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The value for a word on the wire, if it is one.
            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }

            /// Each value's name and word, for the driver's copy (`src/iface.rs`).
            #[cfg(test)]
            pub(crate) const VARIANTS: &'static [(&'static str, &'static str)] =
                &[$((stringify!($variant), $text),)+];
        }
    };
}

words! {
    /// `error` codes in the JSON bodies of the auth endpoints (and of `WWW-Authenticate`).
    ErrorCode in error_code {
        /// The email or password is wrong (login).
        InvalidCredentials = "invalid_credentials",
        /// Throttled; `Retry-After` says for how long.
        TooManyAttempts = "too_many_attempts",
        /// The emailed sign-in code is wrong, used or revoked; `attempts_left` says how many
        /// tries the email's live codes have left (0: ask for a new code).
        InvalidCode = "invalid_code",
        /// The emailed sign-in code ran out of time: ask for a new one.
        CodeExpired = "code_expired",
        /// A new password is too short, too long, too common or the address itself.
        WeakPassword = "weak_password",
        /// Sign-in with a password needs a verified address first (`--require-verified-email`).
        EmailNotVerified = "email_not_verified",
        /// The password was right and the account requires a second factor: the answer names
        /// the ceremony to complete (a passkey, or the emailed code).
        SecondFactorRequired = "second_factor_required",
        /// The action needs a more recent sign-in or step-up (`auth.stepUp()`), not a logout.
        StepUpRequired = "step_up_required",
        /// No passkeys here (the server has none configured, or the account has none).
        PasskeysUnavailable = "passkeys_unavailable",
        /// The refresh token is unknown, expired or revoked: the session is over.
        InvalidGrant = "invalid_grant",
        /// The refresh token was used twice: the session was revoked (theft detection).
        TokenReused = "token_reused",
        /// The refresh cookie's name appeared more than once (cookie tossing): nothing rotated.
        DuplicateCookie = "duplicate_cookie",
        /// A refresh limit (per session or per client) was hit; `Retry-After` says for how long.
        TooManyRequests = "too_many_requests",
        /// A cookie-authenticated endpoint was called without the CSRF header.
        CsrfHeaderMissing = "csrf_header_missing",
        /// No access token on an API request.
        MissingToken = "missing_token",
        /// The access token is invalid or expired (RFC 6750).
        InvalidToken = "invalid_token",
        /// The DPoP proof is missing (bound session), invalid, replayed or by another key
        /// (RFC 9449); nothing changed, the session goes on.
        InvalidDpopProof = "invalid_dpop_proof",
        /// The DPoP proof needs the nonce of this answer's `DPoP-Nonce` header: retry once.
        UseDpopNonce = "use_dpop_nonce",
        InvalidRequest = "invalid_request",
        UnsupportedMediaType = "unsupported_media_type",
        PayloadTooLarge = "payload_too_large",
        NotFound = "not_found",
        MethodNotAllowed = "method_not_allowed",
        TemporarilyUnavailable = "temporarily_unavailable",
        ServerError = "server_error",
    }
}

words! {
    /// Cookies the server sets.
    CookieName {
        /// The refresh token: `HttpOnly; Secure; SameSite=Strict; Path=/`, no `Domain`.
        Refresh = "__Host-tw_refresh",
        /// Not a secret, readable by JS: "a session may exist" (saves anonymous visitors a
        /// refresh request at page load).
        SessionHint = "tw_session",
        /// A federated sign-in under way (`HttpOnly; Secure; SameSite=Lax`, ten minutes): binds
        /// the provider's callback to the browser that started it.
        OidcFlow = "__Host-tw_oidc",
        /// A sign-up with a password waiting for its code (`HttpOnly; Secure; SameSite=Strict`,
        /// the code's lifetime): only the browser that sent the password can complete it, so a
        /// second sign-up of the address (someone else's) cannot set the account's password.
        SignUp = "__Host-tw_signup",
        /// A browser known to an account (`HttpOnly; Secure; SameSite=Strict`, 400 days): set
        /// by a sign-in that proved the account's password; its password attempts count
        /// against it, not against the account's ceiling for everyone else.
        KnownBrowser = "__Host-tw_device",
    }
}

words! {
    /// `tw_error` in the query of the page a federated sign-in returns to (`returnTo`) when it
    /// did not sign in; the client's `restore()` rejects with a `LoginError` of this code.
    FederationError {
        /// The user declined at the provider (or it refused: OAuth's `access_denied`,
        /// `login_required`, `consent_required`, `interaction_required`).
        AccessDenied = "access_denied",
        /// The provider could not be reached (its discovery document, the code exchange).
        ProviderUnavailable = "provider_unavailable",
        /// The provider's answer did not verify (the code exchange refused, the ID token
        /// invalid): the details are in the server's log, never in the URL.
        FederationFailed = "federation_failed",
        /// The provider vouches for an address that is another account's, and may not link
        /// accounts (`link=verified-email` with `email_verified`).
        AccountNotLinked = "account_not_linked",
    }
}

/// Federated sign-in: `GET {OIDC_PATH}/{provider}/start?return_to=PATH&dpop_jkt=THUMBPRINT`.
pub const OIDC_PATH: &str = "/auth/oidc";
/// The query parameter a federated sign-in's error comes back in.
pub const FEDERATION_ERROR_PARAM: &str = "tw_error";

/// The CSRF header the cookie-authenticated endpoints require (a custom header forces a CORS
/// preflight). Its value is [`CSRF_VALUE`].
pub const CSRF_HEADER: &str = "X-Tokenwarden";
pub const CSRF_VALUE: &str = "1";

words! {
    /// The `t` field of a message between tabs (BroadcastChannel).
    PeerKind {
        /// "Who has a fresh token?" from a tab that has none.
        Ask = "ask",
        /// A token, after a login or refresh, or in answer to `ask`.
        Token = "token",
        /// A logout in another tab.
        Logout = "logout",
        /// The server ended the session (refresh refused) or a banking-mode token expired.
        Ended = "ended",
        /// A refresh failed without ending the session (`code`, `status`): the other tabs
        /// share its outcome and wait as this one does before trying again.
        Failed = "failed",
    }
}

words! {
    /// The `code` of the errors the client makes itself (the server's words are
    /// [`ErrorCode`]s: `server_error`, `too_many_attempts`, ...).
    ClientCode in client_code {
        /// `fetch` rejected: the server could not be reached.
        Network = "network",
        /// No answer within `refreshTimeoutMs` (or the lock or the key store took that long).
        Timeout = "timeout",
        /// The refresh endpoint answered outside the protocol; the session is kept.
        UnexpectedResponse = "unexpected_response",
        /// Not logged in.
        NoSession = "no_session",
        /// A `ConfigError`: an option or argument the driver refused.
        InvalidOption = "invalid_option",
    }
}

words! {
    /// The events of `TokenManager.on`.
    Event {
        Login = "login",
        /// `{expiresIn}`: seconds the new token lives.
        Refresh = "refresh",
        /// `{reason}`: an [`EndReason`].
        SessionExpired = "sessionExpired",
        TokenReused = "tokenReused",
        Logout = "logout",
    }
}

words! {
    /// Why a session ended (`sessionExpired`'s `reason`).
    EndReason {
        /// The server refused the refresh token: expired, revoked or logged out elsewhere.
        InvalidGrant = "invalid_grant",
        /// The server saw the refresh token reused and revoked the session.
        TokenReused = "token_reused",
        /// `autoRefresh: false` and the access token expired.
        Expired = "expired",
    }
}

words! {
    /// The `name` of the errors the JavaScript API rejects with.
    ErrorName {
        Config = "ConfigError",
        Login = "LoginError",
        SessionExpired = "SessionExpiredError",
        Network = "NetworkError",
        Refresh = "RefreshError",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_parses_back_to_itself() {
        for w in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(w.as_str()), Some(*w));
        }
        for w in PeerKind::ALL {
            assert_eq!(PeerKind::parse(w.as_str()), Some(*w));
        }
        for w in Event::ALL {
            assert_eq!(Event::parse(w.as_str()), Some(*w));
        }
        for w in EndReason::ALL {
            assert_eq!(EndReason::parse(w.as_str()), Some(*w));
        }
        for w in FederationError::ALL {
            assert_eq!(FederationError::parse(w.as_str()), Some(*w));
        }
        assert_eq!(error_code::TokenReused, ErrorCode::TokenReused.as_str());
        assert_eq!(client_code::NoSession, ClientCode::NoSession.as_str());
        for w in ClientCode::ALL {
            assert_eq!(ClientCode::parse(w.as_str()), Some(*w));
            // A client code is never one of the server's.
            assert_eq!(ErrorCode::parse(w.as_str()), None, "{w:?}");
        }
        assert_eq!(PeerKind::parse("Token"), None);
        assert_eq!(ErrorCode::parse(""), None);
    }

    /// The driver and the typings are JavaScript and TypeScript, so they cannot import these
    /// enums; this test keeps them from drifting.
    #[test]
    fn the_driver_and_the_typings_use_these_words() {
        let driver = include_str!("web/tokenwarden.js");
        let typings = include_str!("web/tokenwarden.d.ts");
        let events = driver
            .lines()
            .find(|l| l.starts_with("const EVENTS"))
            .unwrap_or_default();
        for e in Event::ALL {
            let quoted = format!("\"{}\"", e.as_str());
            assert!(events.contains(&quoted), "EVENTS lacks {quoted}");
            assert!(
                typings.contains(&format!("  {}: ", e.as_str())),
                "d.ts lacks {quoted}"
            );
        }
        for n in ErrorName::ALL {
            assert!(typings.contains(&format!("\"{}\"", n.as_str())), "{n:?}");
        }
        for r in EndReason::ALL {
            assert!(typings.contains(&format!("\"{}\"", r.as_str())), "{r:?}");
        }
        // The codes a sign-in can be refused with are documented for TypeScript users.
        for c in [
            ErrorCode::InvalidCredentials,
            ErrorCode::InvalidCode,
            ErrorCode::CodeExpired,
            ErrorCode::TooManyAttempts,
        ] {
            assert!(typings.contains(&format!("`{}`", c.as_str())), "{c:?}");
        }
        // The driver builds the message fields of these kinds itself (its constants are
        // generated from this file: src/iface.rs).
        for k in ["PEER_TOKEN", "PEER_ENDED", "PEER_FAILED"] {
            assert!(driver.contains(&format!("kind === {k}")), "{k}");
        }
        assert!(driver.contains("name: CSRF_HEADER, value: CSRF_VALUE"));
        assert!(driver.contains("COOKIE_SESSION_HINT,"));
        // Federated sign-in: the start path the driver builds, the parameter `restore()`
        // reads (in a regular expression: spelt), and the codes it rejects with, typed for
        // TypeScript users.
        assert!(driver.contains("OIDC_PATH + \"/\" + "));
        assert!(driver.contains(&format!("/([?&]){FEDERATION_ERROR_PARAM}=(")));
        for c in FederationError::ALL {
            assert!(typings.contains(&format!("\"{}\"", c.as_str())), "{c:?}");
            // restore() carries a code as it is only if it is this plain (`[a-z_]{1,64}`).
            let plain = c
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_');
            assert!(plain && c.as_str().len() <= 64, "{c:?}");
        }
    }
}
