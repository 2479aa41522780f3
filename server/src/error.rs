//! The one error type of the HTTP layer. Every failure a client can cause maps to a 4xx with a
//! JSON body `{"error": code, "error_description": text}`; only a broken database is a 5xx.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::cookies;
use crate::tokens::Invalid;
use tokenwarden::proto::ErrorCode;
use tokenwarden_dpop::{ProofError, dpop_challenge};

/// The realm of every challenge.
const REALM: &str = "tokenwarden";

#[derive(Debug)]
pub enum ApiError {
    /// Wrong email or password (401 `invalid_credentials`), the same for unknown emails.
    InvalidCredentials,
    /// A signed-in user's current password is wrong (403 `invalid_credentials`: the token is
    /// fine, so no 401 that would make the client refresh and replay).
    WrongPassword,
    /// A signed-in user's passkey ceremony (adding one, a step-up) was refused (403
    /// `invalid_credentials`, as [`ApiError::WrongPassword`]: the token is fine).
    PasskeyRefused,
    /// Login throttled, per account or per IP, or sign-in codes asked for or tried too often
    /// (429 `too_many_attempts`, `Retry-After`).
    TooManyAttempts {
        retry_after: i64,
    },
    /// The emailed code is wrong, used up or revoked (401 `invalid_code`, `attempts_left`: the
    /// tries the live codes of that email have left).
    InvalidCode {
        attempts_left: i64,
    },
    /// The email's code ran out of time and no other is live (401 `code_expired`).
    CodeExpired,
    /// A new password does not meet the rules (400 `weak_password`, the rule in the text).
    WeakPassword(String),
    /// The password is right but the address is not verified yet (403 `email_not_verified`).
    EmailNotVerified,
    /// The legacy sign-in backend of a lazy migration did not answer (503
    /// `temporarily_unavailable`).
    LegacyUnavailable,
    /// Refresh token unknown, expired or revoked (401 `invalid_grant`); clears the cookies.
    InvalidGrant,
    /// Refresh token reused: the session was revoked (401 `token_reused`); clears the cookies.
    TokenReused,
    /// The refresh cookie (or, at sign-up verify, the sign-up cookie) appears more than once (400
    /// `duplicate_cookie`); nothing changes.
    DuplicateCookie,
    /// Refresh throttled, per session, per client IP or per token (429 `too_many_requests`,
    /// `Retry-After`).
    TooManyRequests {
        retry_after: i64,
    },
    /// The CSRF header is missing on a cookie-authenticated endpoint (403 `csrf_header_missing`).
    CsrfHeaderMissing,
    /// No bearer token (401, `WWW-Authenticate: Bearer realm=...` without an error code).
    MissingToken,
    /// Bearer token refused (401 `invalid_token`, RFC 6750 `WWW-Authenticate`).
    InvalidToken(Invalid),
    /// Access token refused on a DPoP request, or sent with the wrong scheme (401
    /// `invalid_token`, `WWW-Authenticate: DPoP`).
    InvalidDpopToken(Invalid),
    /// DPoP proof missing (bound session) or refused (401 `invalid_dpop_proof`). Nothing changed.
    DpopProof(ProofError),
    /// The proof's nonce is missing or old (`use_dpop_nonce`): 400 from the token endpoints
    /// (`/auth/login|refresh|logout`), 401 from resources. The nonce layer adds `DPoP-Nonce`.
    UseDpopNonce {
        token_endpoint: bool,
    },
    /// The request body or a parameter is invalid (400 `invalid_request`).
    InvalidRequest(String),
    /// The body is not `application/json` (415 `unsupported_media_type`).
    UnsupportedMediaType,
    /// The body is larger than the endpoint accepts (413 `payload_too_large`).
    PayloadTooLarge,
    NotFound,
    /// The path exists but not with this method (405 `method_not_allowed`).
    MethodNotAllowed,
    /// A test hook asked for it, or the JWKS of an instance out of step (503
    /// `temporarily_unavailable`).
    Unavailable,
    /// Every password-verification slot is taken and the queue is full (503
    /// `temporarily_unavailable`, `Retry-After`).
    Busy {
        retry_after: i64,
    },
    /// The action needs a sign-in or step-up more recent than `max_age` seconds (403
    /// `step_up_required`): the client asks the user to confirm (a passkey), not a logout.
    StepUpRequired {
        max_age: i64,
    },
    /// Passkeys are not configured (`--webauthn-rp-id`), or the account has none for the step
    /// asked (400 `passkeys_unavailable`).
    PasskeysUnavailable(&'static str),
    /// The password is right and the account requires a second factor (401
    /// `second_factor_required`): the ceremony that completes the sign-in, a passkey challenge
    /// (`{"publicKey": ...}`) if the account has passkeys, and whether a code was emailed.
    SecondFactorRequired {
        ceremony: String,
        passkey: Option<serde_json::Value>,
        email_code: bool,
    },
    /// Database or signing failure (500 `server_error`); details go to the log only.
    Internal(String),
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        // Two transactions side by side that PostgreSQL ended one of (a lock cycle), or a
        // SQLite write another process's made stale: nothing was written, so a 503 to retry,
        // not a 500.
        if e.is_transient() {
            tracing::warn!(error = %e, "a transaction lost to another side by side: 503");
            return ApiError::Busy { retry_after: 1 };
        }
        ApiError::Internal(e.to_string())
    }
}

impl From<crate::keys::KeyError> for ApiError {
    fn from(e: crate::keys::KeyError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<crate::tokens::IssueError> for ApiError {
    fn from(e: crate::tokens::IssueError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl ApiError {
    /// The `error` field of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidCredentials | ApiError::WrongPassword | ApiError::PasskeyRefused => {
                ErrorCode::InvalidCredentials.as_str()
            }
            ApiError::TooManyAttempts { .. } => ErrorCode::TooManyAttempts.as_str(),
            ApiError::InvalidCode { .. } => ErrorCode::InvalidCode.as_str(),
            ApiError::CodeExpired => ErrorCode::CodeExpired.as_str(),
            ApiError::WeakPassword(_) => ErrorCode::WeakPassword.as_str(),
            ApiError::EmailNotVerified => ErrorCode::EmailNotVerified.as_str(),
            ApiError::InvalidGrant => ErrorCode::InvalidGrant.as_str(),
            ApiError::TokenReused => ErrorCode::TokenReused.as_str(),
            ApiError::DuplicateCookie => ErrorCode::DuplicateCookie.as_str(),
            ApiError::TooManyRequests { .. } => ErrorCode::TooManyRequests.as_str(),
            ApiError::CsrfHeaderMissing => ErrorCode::CsrfHeaderMissing.as_str(),
            ApiError::MissingToken => ErrorCode::MissingToken.as_str(),
            ApiError::InvalidToken(_) | ApiError::InvalidDpopToken(_) => {
                ErrorCode::InvalidToken.as_str()
            }
            ApiError::DpopProof(_) => ErrorCode::InvalidDpopProof.as_str(),
            ApiError::UseDpopNonce { .. } => ErrorCode::UseDpopNonce.as_str(),
            ApiError::InvalidRequest(_) => ErrorCode::InvalidRequest.as_str(),
            ApiError::UnsupportedMediaType => ErrorCode::UnsupportedMediaType.as_str(),
            ApiError::PayloadTooLarge => ErrorCode::PayloadTooLarge.as_str(),
            ApiError::NotFound => ErrorCode::NotFound.as_str(),
            ApiError::MethodNotAllowed => ErrorCode::MethodNotAllowed.as_str(),
            ApiError::Unavailable | ApiError::Busy { .. } | ApiError::LegacyUnavailable => {
                ErrorCode::TemporarilyUnavailable.as_str()
            }
            ApiError::StepUpRequired { .. } => ErrorCode::StepUpRequired.as_str(),
            ApiError::PasskeysUnavailable(_) => ErrorCode::PasskeysUnavailable.as_str(),
            ApiError::SecondFactorRequired { .. } => ErrorCode::SecondFactorRequired.as_str(),
            ApiError::Internal(_) => ErrorCode::ServerError.as_str(),
        }
    }

    /// One value of every variant (the protocol document's error table is checked against it).
    pub fn examples() -> Vec<ApiError> {
        vec![
            ApiError::InvalidCredentials,
            ApiError::WrongPassword,
            ApiError::PasskeyRefused,
            ApiError::TooManyAttempts { retry_after: 1 },
            ApiError::InvalidCode { attempts_left: 2 },
            ApiError::CodeExpired,
            ApiError::WeakPassword(String::new()),
            ApiError::EmailNotVerified,
            ApiError::LegacyUnavailable,
            ApiError::InvalidGrant,
            ApiError::TokenReused,
            ApiError::DuplicateCookie,
            ApiError::TooManyRequests { retry_after: 1 },
            ApiError::CsrfHeaderMissing,
            ApiError::MissingToken,
            ApiError::InvalidToken(Invalid::Token(
                tokenwarden_dpop::access::TokenError::Expired,
            )),
            ApiError::InvalidDpopToken(Invalid::Bound),
            ApiError::DpopProof(ProofError::Signature),
            ApiError::UseDpopNonce {
                token_endpoint: true,
            },
            ApiError::InvalidRequest(String::new()),
            ApiError::UnsupportedMediaType,
            ApiError::PayloadTooLarge,
            ApiError::NotFound,
            ApiError::MethodNotAllowed,
            ApiError::Unavailable,
            ApiError::Busy { retry_after: 1 },
            ApiError::StepUpRequired { max_age: 300 },
            ApiError::PasskeysUnavailable(""),
            ApiError::SecondFactorRequired {
                ceremony: String::new(),
                passkey: None,
                email_code: false,
            },
            ApiError::Internal(String::new()),
        ]
    }
}

fn with_retry_after(mut res: Response, retry_after: i64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&retry_after.max(1).to_string()) {
        res.headers_mut().insert(header::RETRY_AFTER, v);
    }
    res
}

fn body(status: StatusCode, code: &str, description: &str) -> Response {
    let mut res = (
        status,
        axum::Json(json!({ "error": code, "error_description": description })),
    )
        .into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Appends a `WWW-Authenticate` challenge.
fn challenge(mut res: Response, value: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(value) {
        res.headers_mut().append(header::WWW_AUTHENTICATE, v);
    }
    res
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code();
        match self {
            ApiError::InvalidCredentials => body(
                StatusCode::UNAUTHORIZED,
                code,
                "the email or password is wrong",
            ),
            ApiError::WrongPassword => {
                body(StatusCode::FORBIDDEN, code, "the current password is wrong")
            }
            ApiError::PasskeyRefused => {
                body(StatusCode::FORBIDDEN, code, "the passkey was refused")
            }
            ApiError::TooManyAttempts { retry_after } => with_retry_after(
                body(
                    StatusCode::TOO_MANY_REQUESTS,
                    code,
                    "too many login attempts; retry later",
                ),
                retry_after,
            ),
            ApiError::InvalidCode { attempts_left } => {
                let mut res = (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(json!({
                        "error": code,
                        "error_description": "the code is wrong, used or revoked",
                        "attempts_left": attempts_left,
                    })),
                )
                    .into_response();
                res.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                res
            }
            ApiError::CodeExpired => body(
                StatusCode::UNAUTHORIZED,
                code,
                "the code has expired; ask for a new one",
            ),
            ApiError::WeakPassword(why) => body(StatusCode::BAD_REQUEST, code, &why),
            ApiError::EmailNotVerified => body(
                StatusCode::FORBIDDEN,
                code,
                "verify your email address first: ask for a code at /auth/email/verify/start",
            ),
            ApiError::StepUpRequired { max_age } => {
                let mut res = (
                    StatusCode::FORBIDDEN,
                    axum::Json(json!({
                        "error": code,
                        "error_description": "confirm it is you (a passkey) first: POST /auth/step-up/start",
                        "max_age": max_age,
                    })),
                )
                    .into_response();
                res.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                res
            }
            ApiError::PasskeysUnavailable(why) => body(StatusCode::BAD_REQUEST, code, why),
            ApiError::SecondFactorRequired {
                ceremony,
                passkey,
                email_code,
            } => {
                let mut res = (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(json!({
                        "error": code,
                        "error_description": "the password is right; complete the sign-in with a passkey or the emailed code at /auth/login/second-factor",
                        "ceremony": ceremony,
                        "passkey": passkey,
                        "email_code": email_code,
                    })),
                )
                    .into_response();
                res.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                res
            }
            ApiError::LegacyUnavailable => with_retry_after(
                body(
                    StatusCode::SERVICE_UNAVAILABLE,
                    code,
                    "the sign-in service is unavailable; retry later",
                ),
                5,
            ),
            ApiError::TooManyRequests { retry_after } => with_retry_after(
                body(
                    StatusCode::TOO_MANY_REQUESTS,
                    code,
                    "too many refreshes; retry later",
                ),
                retry_after,
            ),
            ApiError::DuplicateCookie => body(
                StatusCode::BAD_REQUEST,
                code,
                "a cookie of this endpoint (the refresh or the sign-up cookie) appears more than once in the request",
            ),
            ApiError::InvalidGrant => cookies::clear(body(
                StatusCode::UNAUTHORIZED,
                code,
                "the refresh token is missing, expired or revoked",
            )),
            ApiError::TokenReused => cookies::clear(body(
                StatusCode::UNAUTHORIZED,
                code,
                "the refresh token was already used; the session has been revoked",
            )),
            ApiError::CsrfHeaderMissing => body(
                StatusCode::FORBIDDEN,
                code,
                "this endpoint requires the header X-Tokenwarden: 1",
            ),
            ApiError::MissingToken => {
                let mut res = body(
                    StatusCode::UNAUTHORIZED,
                    code,
                    "an Authorization: DPoP or Bearer token is required",
                );
                res.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer realm="tokenwarden""#),
                );
                challenge(res, &dpop_challenge(REALM, None))
            }
            ApiError::InvalidDpopToken(why) => {
                let res = body(StatusCode::UNAUTHORIZED, code, why.description());
                challenge(res, &dpop_challenge(REALM, Some((code, why.description()))))
            }
            ApiError::DpopProof(why) => {
                let description = why.to_string();
                let res = body(StatusCode::UNAUTHORIZED, code, &description);
                challenge(res, &dpop_challenge(REALM, Some((code, &description))))
            }
            ApiError::UseDpopNonce { token_endpoint } => {
                let description = ProofError::Nonce.to_string();
                if token_endpoint {
                    body(StatusCode::BAD_REQUEST, code, &description)
                } else {
                    let res = body(StatusCode::UNAUTHORIZED, code, &description);
                    challenge(res, &dpop_challenge(REALM, Some((code, &description))))
                }
            }
            ApiError::InvalidToken(why) => {
                let mut res = body(StatusCode::UNAUTHORIZED, code, why.description());
                let challenge = format!(
                    r#"Bearer realm="tokenwarden", error="invalid_token", error_description="{}""#,
                    why.description()
                );
                if let Ok(v) = HeaderValue::from_str(&challenge) {
                    res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                }
                res
            }
            ApiError::InvalidRequest(why) => body(StatusCode::BAD_REQUEST, code, &why),
            ApiError::UnsupportedMediaType => body(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                code,
                "the body must be application/json",
            ),
            ApiError::PayloadTooLarge => {
                body(StatusCode::PAYLOAD_TOO_LARGE, code, "the body is too large")
            }
            ApiError::NotFound => body(StatusCode::NOT_FOUND, code, "no such resource"),
            ApiError::MethodNotAllowed => body(
                StatusCode::METHOD_NOT_ALLOWED,
                code,
                "this endpoint does not accept that method",
            ),
            ApiError::Unavailable => body(
                StatusCode::SERVICE_UNAVAILABLE,
                code,
                "the server is temporarily unavailable",
            ),
            ApiError::Busy { retry_after } => with_retry_after(
                body(
                    StatusCode::SERVICE_UNAVAILABLE,
                    code,
                    "the server is busy; retry later",
                ),
                retry_after,
            ),
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                body(StatusCode::INTERNAL_SERVER_ERROR, code, "internal error")
            }
        }
    }
}
