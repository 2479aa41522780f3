//! Command line and environment, and the validated settings the server runs with: plain data.
//! Every option has a `TW_*` environment variable.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;

use crate::kek::{KeyEncryption, LocalKek};
use crate::rotation::Policy;

/// The longest lifetime a sign-in code may be given.
pub const MAX_CODE_TTL_SECS: i64 = 3600;

/// The header a trusted proxy records the client in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239)
    Forwarded,
}

/// Which peers are reverse proxies whose forwarding header is believed (crate::net).
#[derive(Debug, Clone, Default)]
pub struct Proxies {
    pub trusted: Vec<IpNet>,
    pub header: ForwardedHeader,
}

#[derive(Parser)]
#[command(
    name = "tokenwarden-server",
    version,
    about = "Reference auth server for tokenwarden: rotating refresh tokens with reuse detection, \
             user-visible sessions, EdDSA access tokens with key rotation"
)]
pub struct Cli {
    /// Database URL: `sqlite://path/file.db`, `sqlite::memory:` or a file path (SQLite, one
    /// instance), or `postgres://user:password@host:port/database` (any number of instances;
    /// docs/DEPLOYMENT.md). Anything else is refused, a libpq keyword string too. A PostgreSQL
    /// host off this machine is reached over TLS with its certificate verified
    /// (`sslmode=verify-full`) unless the URL or `PGSSLMODE` names an sslmode.
    #[arg(
        long,
        env = "TW_DATABASE_URL",
        hide_env_values = true,
        default_value = "sqlite://data/tokenwarden.db",
        global = true
    )]
    pub database_url: String,

    /// A file holding the database URL (a PostgreSQL password stays out of the process's
    /// arguments and environment; a Docker or Kubernetes secret).
    #[arg(
        long,
        env = "TW_DATABASE_URL_FILE",
        global = true,
        conflicts_with = "database_url"
    )]
    pub database_url_file: Option<PathBuf>,

    /// File holding the 32-byte key that seals signing keys at rest (raw, or base64 text; 32
    /// printable characters are text, not a key).
    /// Alternatively `TW_KEY_ENCRYPTION_KEY` holds it as base64 (not both). Required for a
    /// database file, except with --demo (which creates `<database>.kek` beside it).
    #[arg(long, env = "TW_KEY_ENCRYPTION_KEY_FILE", global = true)]
    pub key_encryption_key_file: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve the API (the default when no command is given).
    Serve,
    /// Signing keys: list, rotate, revoke.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Users.
    #[command(subcommand)]
    Users(UsersCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List keys with their state.
    List,
    /// Graceful rotation: a new key, published in the JWKS at once, signs after
    /// --key-publish-secs; the old one then verifies for --key-grace-secs.
    Rotate,
    /// Emergency revocation: tokens signed by KID are refused at once (clients refresh).
    Revoke {
        /// Base64url, so it may start with `-`: taken as the kid, not as an option.
        #[arg(allow_hyphen_values = true)]
        kid: String,
    },
    /// A new key-encryption key: every signing key and sealed secret, opened with the current
    /// one (TW_KEY_ENCRYPTION_KEY or --key-encryption-key-file), sealed again with the new one,
    /// in one transaction. Stop every instance first; start them with the new key after.
    Reseal {
        /// The new key-encryption key's file (base64 of 32 bytes, as the current one's).
        #[arg(long)]
        new_key_encryption_key_file: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum UsersCommand {
    /// Create a user. The password is read from TW_PASSWORD, or prompted on stdin (not echoed).
    Add {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        // (No `--password`: a flag's value is in `ps` and the shell's history.)
    },
    /// Import users from JSON Lines (one object per line: email, and optionally id, name,
    /// email_verified, password_hash, roles, claims). All or nothing: a refused line is
    /// reported with its number and nothing is imported. Users already there are left as
    /// they are, so running the same file again changes nothing.
    Import {
        /// The file, or `-` for standard input.
        file: PathBuf,
        /// Check every line and report, without writing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Replace the claims the app owns of a user (a JSON object, copied into their access
    /// tokens from the next refresh on).
    SetClaims { email: String, claims: String },
    /// Replace the roles of a user (comma-separated; from the next refresh on).
    SetRoles {
        email: String,
        #[arg(value_delimiter = ',')]
        roles: Vec<String>,
    },
}

#[derive(Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "TW_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// Demo mode: seed the demo user, 30 s access tokens, sign-up with a password, allow this
    /// server's own origin.
    /// Refused on a non-loopback address without --demo-public (its password is published).
    /// Without --demo, the demo user is deleted at start.
    #[arg(long, env = "TW_DEMO")]
    pub demo: bool,

    /// Allow --demo on a non-loopback address.
    #[arg(long, env = "TW_DEMO_PUBLIC")]
    pub demo_public: bool,

    /// Enable /test/* hooks (counters, faults, clock). Only in a binary built with the
    /// `test-hooks` Cargo feature; refused on a non-loopback address.
    #[arg(long, env = "TW_TEST_HOOKS")]
    pub test_hooks: bool,

    /// The secret every /test/* request must carry in `X-Test-Hooks-Secret` (at least 16
    /// characters). Random, and printed at start, when not given.
    #[arg(long, env = "TW_TEST_HOOKS_SECRET", hide_env_values = true)]
    pub test_hooks_secret: Option<String>,

    /// `iss` of access tokens.
    #[arg(long, env = "TW_ISSUER", default_value = "tokenwarden")]
    pub issuer: String,

    /// `aud` of access tokens.
    #[arg(long, env = "TW_AUDIENCE", default_value = "tokenwarden-api")]
    pub audience: String,

    /// Access-token lifetime in seconds [default: 600, or 30 with --demo].
    #[arg(long, env = "TW_ACCESS_TTL_SECS")]
    pub access_ttl_secs: Option<i64>,

    /// Sliding idle lifetime of a session, renewed by each refresh.
    #[arg(long, env = "TW_IDLE_TTL_SECS", default_value_t = 14 * 86_400)]
    pub idle_ttl_secs: i64,

    /// Absolute lifetime of a session, which no refresh extends.
    #[arg(long, env = "TW_ABSOLUTE_TTL_SECS", default_value_t = 30 * 86_400)]
    pub absolute_ttl_secs: i64,

    /// Clock-skew leeway when checking exp/nbf (at most 30).
    #[arg(long, env = "TW_LEEWAY_SECS", default_value_t = 5)]
    pub leeway_secs: i64,

    /// How long a retired signing key keeps verifying (at least one access-token lifetime).
    #[arg(long, env = "TW_KEY_GRACE_SECS", default_value_t = 86_400)]
    pub key_grace_secs: i64,

    /// How long `keys rotate` publishes the next key (in the JWKS) before it signs: every
    /// verifier's cached JWKS sees it first. At least --jwks-max-age-secs.
    #[arg(long, env = "TW_KEY_PUBLISH_SECS", default_value_t = 120)]
    pub key_publish_secs: i64,

    /// The file holding the service token that `GET /auth/revocations` (the revocation feed
    /// of the services that verify tokens themselves) requires as `Authorization: Bearer`; at
    /// least 32 characters. Without it the feed does not exist.
    #[arg(long, env = "TW_REVOCATION_FEED_TOKEN_FILE")]
    pub revocation_feed_token_file: Option<PathBuf>,

    /// An OpenID Connect provider users may sign in with, repeatable (`;` between several in
    /// TW_OIDC): `name=NAME,issuer=URL,client-id=ID,client-secret-file=PATH` and optionally
    /// `scopes=openid email profile` and `link=verified-email` (the provider is trusted with
    /// addresses: a new account holds its verified email, and a first sign-in whose verified
    /// email is an existing account's signs into that account; without it, a new account gets
    /// an address of its own). Register
    /// `<origin>/auth/oidc/NAME/callback` as the redirect URI and
    /// `<origin>/auth/oidc/NAME/backchannel-logout` as the back-channel logout URI.
    #[arg(long = "oidc", env = "TW_OIDC", value_delimiter = ';')]
    pub oidc: Vec<String>,

    /// Passkeys (WebAuthn): the relying party id, the registrable domain the pages are on
    /// (`example.com` for `app.example.com`; `localhost` in development; never an IP address).
    /// Without it there are no passkeys (with --demo: `localhost`).
    #[arg(long, env = "TW_WEBAUTHN_RP_ID")]
    pub webauthn_rp_id: Option<String>,

    /// The origins of the pages that may use passkeys (`https://app.example.com`), each within
    /// --webauthn-rp-id. Repeat or separate with commas. Default: `https://<rp id>` (with
    /// --demo, this server's `http://localhost:<port>`).
    #[arg(
        long = "webauthn-origin",
        env = "TW_WEBAUTHN_ORIGINS",
        value_delimiter = ','
    )]
    pub webauthn_origins: Vec<String>,

    /// The name the browser shows for this site when it asks for a passkey.
    #[arg(long, env = "TW_WEBAUTHN_RP_NAME", default_value = "tokenwarden")]
    pub webauthn_rp_name: String,

    /// How recent a sign-in or step-up must be for the sensitive actions (adding or removing a
    /// passkey, changing the second-factor setting): older, they answer 403 `step_up_required`.
    /// A password change asks for the current password instead.
    #[arg(long, env = "TW_STEP_UP_MAX_AGE_SECS", default_value_t = 300)]
    pub step_up_max_age_secs: i64,

    /// `Cache-Control: max-age` of the JWKS (and the discovery document).
    #[arg(long, env = "TW_JWKS_MAX_AGE_SECS", default_value_t = 60)]
    pub jwks_max_age_secs: i64,

    /// How often the server re-reads signing keys changed by `keys rotate|revoke`, and runs
    /// its other maintenance (at most 60).
    #[arg(long, env = "TW_KEY_POLL_SECS", default_value_t = 1)]
    pub key_poll_secs: u64,

    /// Origins allowed by CORS (with credentials). Repeat or separate with commas. https, or
    /// plain http on 127.0.0.1, ::1 or localhost only.
    #[arg(
        long = "allowed-origin",
        env = "TW_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Other origins the pages served from --www-dir may fetch from (added to their CSP's
    /// `connect-src`, which is `'self'` otherwise): an API on another origin. Repeat or
    /// separate with commas.
    #[arg(long = "connect-src", env = "TW_CONNECT_SRC", value_delimiter = ',')]
    pub connect_src: Vec<String>,

    /// Password attempts per account from one client IP (IPv6: one /64) within
    /// --login-window-secs; beyond, 429 without checking the password. A successful login
    /// clears that count; other addresses (the account's owner) are not affected.
    #[arg(long, env = "TW_LOGIN_MAX_FAILURES", default_value_t = 10)]
    pub login_max_failures: i64,

    /// Password attempts per account within --login-window-secs from every client but the
    /// browsers known to it (those where its password was right before, by their
    /// `__Host-tw_device` cookie, which count --login-max-failures of their own); beyond, 429
    /// without checking the password. Bounds a guesser with many addresses; the owner's known
    /// browsers still sign in.
    #[arg(long, env = "TW_LOGIN_ACCOUNT_MAX_FAILURES", default_value_t = 50)]
    pub login_account_max_failures: i64,

    /// The window of --login-max-failures.
    #[arg(long, env = "TW_LOGIN_WINDOW_SECS", default_value_t = 900)]
    pub login_window_secs: i64,

    /// Login attempts per client IP (IPv6: per /64, and per /56 at 16 times this) per minute.
    #[arg(long, env = "TW_LOGIN_IP_PER_MINUTE", default_value_t = 60)]
    pub login_ip_per_minute: u32,

    /// Refreshes per client IP (IPv6: per /64) per minute.
    #[arg(long, env = "TW_REFRESH_IP_PER_MINUTE", default_value_t = 600)]
    pub refresh_ip_per_minute: u32,

    /// Refreshes per session per minute.
    #[arg(long, env = "TW_REFRESH_SESSION_PER_MINUTE", default_value_t = 30)]
    pub refresh_session_per_minute: u32,

    /// How long a refresh token that was just used may be presented again for another child
    /// (concurrent tabs, retries).
    #[arg(long, env = "TW_ROTATION_GRACE_SECS", default_value_t = 30)]
    pub rotation_grace_secs: i64,

    /// Most children one refresh token may have within that window.
    #[arg(long, env = "TW_ROTATION_MAX_CHILDREN", default_value_t = 32)]
    pub rotation_max_children: i64,

    /// Reverse proxies (CIDR, e.g. 10.0.0.0/8 or 127.0.0.1/32) whose forwarding header gives
    /// the client's address. Repeat or separate with commas. A range of every address, or
    /// wider than a /8 of IPv4 or a /7 of IPv6, is refused; an IPv4-mapped one
    /// (`::ffff:10.0.0.5/128`, or under NAT64's `64:ff9b::/96`) is its IPv4 range.
    #[arg(
        long = "trusted-proxy",
        env = "TW_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<IpNet>,

    /// The header the trusted proxies append the client's address to.
    #[arg(long, env = "TW_FORWARDED_HEADER", value_enum, default_value_t = ForwardedHeader::XForwardedFor)]
    pub forwarded_header: ForwardedHeader,

    /// Password verifications running at once [default: the number of CPUs].
    #[arg(long, env = "TW_ARGON2_CONCURRENCY")]
    pub argon2_concurrency: Option<usize>,

    /// Logins waiting for a verification slot before the server answers 503.
    #[arg(long, env = "TW_ARGON2_QUEUE", default_value_t = 32)]
    pub argon2_queue: usize,

    /// Time a client has to send a request's headers (from when the server starts waiting for
    /// them, which on a kept-alive connection is when the previous response was sent), and then
    /// its body (from when the server starts reading it).
    #[arg(long, env = "TW_HEADER_READ_TIMEOUT_SECS", default_value_t = 10)]
    pub header_read_timeout_secs: u64,

    /// A connection on which no byte moves either way for this long is closed (at least 30
    /// with the revocation feed on).
    #[arg(long, env = "TW_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub idle_timeout_secs: u64,

    /// Connections served at once; more wait in the listen backlog.
    #[arg(long, env = "TW_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Connections served at once from one client address (an IPv4 address, an IPv6 /64; the
    /// --trusted-proxy addresses are not counted); more from it are closed at once. Raise it
    /// for many users behind one NAT address without a proxy.
    #[arg(long, env = "TW_MAX_CONNECTIONS_PER_CLIENT", default_value_t = 256)]
    pub max_connections_per_client: usize,

    /// Directory served at /, if it exists (with --demo, `www`: the demo SPA). Without it and
    /// without --demo, nothing: a `www` where the server happened to start (`/var/www`) would
    /// run its scripts on the auth server's origin. A file or directory whose name starts with
    /// a dot is never served (404), except under `/.well-known/`.
    #[arg(long, env = "TW_WWW_DIR")]
    pub www_dir: Option<PathBuf>,

    /// Directory served at /pkg/ (the npm package), if it exists (with --demo, `pkg`).
    #[arg(long, env = "TW_PKG_DIR")]
    pub pkg_dir: Option<PathBuf>,

    /// Serve HTTPS with this PEM certificate chain (and --tls-key). Safari and WebKit refuse
    /// `Secure` cookies over plain http, even on localhost.
    #[arg(long, env = "TW_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, env = "TW_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    #[command(flatten)]
    pub dpop: DpopArgs,

    #[command(flatten)]
    pub otp: OtpArgs,

    #[command(flatten)]
    pub accounts: AccountArgs,
}

/// Accounts: sign-up, verified addresses, a lazy migration (docs/PROTOCOL.md, "Accounts").
#[derive(Clone, Args)]
pub struct AccountArgs {
    /// `password`: anyone may sign up with an email and a password; the account is created
    /// when the code mailed to the address comes back (`POST /auth/signup`). Needs a way to
    /// mail codes (--smtp-url, or --demo).
    #[arg(long = "signup", env = "TW_SIGNUP", value_enum, default_value_t = SignupMode::Off)]
    pub signup: SignupMode,

    /// Refuse sign-in with a password (`email_not_verified`) until the address is verified by
    /// an emailed code (`POST /auth/email/verify/start`).
    #[arg(long, env = "TW_REQUIRE_VERIFIED_EMAIL")]
    pub require_verified_email: bool,

    /// Lazy migration: the old backend that checks the password of a user unknown here
    /// (POST JSON {email, password}; docs/PROTOCOL.md, "Lazy migration"). https, or http to a
    /// loopback address.
    #[arg(
        long,
        env = "TW_LEGACY_LOGIN_URL",
        requires = "legacy_login_secret_file"
    )]
    pub legacy_login_url: Option<String>,

    /// The file holding the secret sent to the old backend in X-Tokenwarden-Legacy-Secret.
    #[arg(long, env = "TW_LEGACY_LOGIN_SECRET_FILE")]
    pub legacy_login_secret_file: Option<PathBuf>,

    /// How long the old backend has to answer.
    #[arg(long, env = "TW_LEGACY_LOGIN_TIMEOUT_MS", default_value_t = 3000)]
    pub legacy_login_timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SignupMode {
    Off,
    Password,
}

/// How to reach the old backend of a lazy migration (crate::legacy).
#[derive(Clone)]
pub struct LegacySettings {
    pub url: String,
    pub secret: String,
    pub timeout: Duration,
}

/// The shared secret left out.
impl std::fmt::Debug for LegacySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacySettings")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Sign-in with an emailed code (docs/PROTOCOL.md, "Sign-in with an emailed code"). Enabled
/// by --smtp-url, or by --demo (then codes go to the demo mailbox).
#[derive(Clone, Args)]
pub struct OtpArgs {
    /// The SMTP server sign-in codes are sent through: `smtps://host` (implicit TLS),
    /// `smtp://host?tls=required` (STARTTLS), `smtp://host:port` (plain: a relay on this machine
    /// only; off it, plain only said on purpose and without a password, `?tls=none`); with
    /// credentials `smtp://user:password@host`.
    #[arg(long, env = "TW_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,

    /// A file holding --smtp-url (its password out of the process's arguments and environment).
    #[arg(long, env = "TW_SMTP_URL_FILE", conflicts_with = "smtp_url")]
    pub smtp_url_file: Option<PathBuf>,

    /// The sender of sign-in codes.
    #[arg(
        long,
        env = "TW_SMTP_FROM",
        default_value = "tokenwarden <no-reply@localhost>"
    )]
    pub smtp_from: String,

    /// How long a code works, in seconds (at most 3600).
    #[arg(long, env = "TW_OTP_TTL_SECS", default_value_t = 600)]
    pub otp_ttl_secs: i64,

    /// Digits of a code (6 to 8).
    #[arg(long, env = "TW_OTP_DIGITS", default_value_t = 6)]
    pub otp_digits: u32,

    /// A right code for an email without an account creates the account.
    #[arg(long, env = "TW_OTP_SIGNUP")]
    pub otp_signup: bool,

    /// Codes sent to one email within --otp-send-window-secs (asked for, or sent after a
    /// third wrong try; a +tag after the local part counted as the address without it);
    /// beyond, 429.
    #[arg(long, env = "TW_OTP_SENDS_PER_EMAIL", default_value_t = 5)]
    pub otp_sends_per_email: i64,

    #[arg(long, env = "TW_OTP_SEND_WINDOW_SECS", default_value_t = 3600)]
    pub otp_send_window_secs: i64,

    /// Verifications for one email within --otp-verify-window-secs, from any client (sign-in,
    /// reset and sign-up codes together); beyond, 429. A right code takes back its own attempt.
    #[arg(long, env = "TW_OTP_VERIFIES_PER_EMAIL", default_value_t = 10)]
    pub otp_verifies_per_email: i64,

    #[arg(long, env = "TW_OTP_VERIFY_WINDOW_SECS", default_value_t = 86_400)]
    pub otp_verify_window_secs: i64,

    /// Code requests and verifications per client IP (IPv6: per /64, and per /56 at 16 times
    /// this) per minute.
    #[arg(long, env = "TW_OTP_IP_PER_MINUTE", default_value_t = 20)]
    pub otp_ip_per_minute: u32,
}

/// Validated settings of sign-in codes. No `Debug`: the SMTP URL may hold a password.
#[derive(Clone)]
pub struct OtpSettings {
    pub smtp_url: Option<String>,
    pub smtp_from: String,
    pub ttl_secs: i64,
    pub digits: u32,
    pub signup: bool,
    pub sends_per_email: i64,
    pub send_window_secs: i64,
    pub verifies_per_email: i64,
    pub verify_window_secs: i64,
    pub ip_per_minute: u32,
}

impl Default for OtpSettings {
    fn default() -> Self {
        OtpSettings {
            smtp_url: None,
            smtp_from: "tokenwarden <no-reply@localhost>".into(),
            ttl_secs: 600,
            digits: 6,
            signup: false,
            sends_per_email: 5,
            send_window_secs: 3600,
            verifies_per_email: 10,
            verify_window_secs: 86_400,
            ip_per_minute: 20,
        }
    }
}

impl OtpSettings {
    pub fn from_args(a: &OtpArgs) -> Result<Self, String> {
        if !(1..=MAX_CODE_TTL_SECS).contains(&a.otp_ttl_secs) {
            return Err("--otp-ttl-secs must be between 1 and 3600".into());
        }
        if !(6..=8).contains(&a.otp_digits) {
            return Err("--otp-digits must be 6, 7 or 8".into());
        }
        Ok(OtpSettings {
            smtp_url: secret_or_file(
                a.smtp_url.as_ref(),
                a.smtp_url_file.as_deref(),
                "--smtp-url",
            )?
            .filter(|u| !u.trim().is_empty()),
            smtp_from: a.smtp_from.clone(),
            ttl_secs: a.otp_ttl_secs,
            digits: a.otp_digits,
            signup: a.otp_signup,
            sends_per_email: a.otp_sends_per_email.max(1),
            send_window_secs: a.otp_send_window_secs.max(1),
            verifies_per_email: a.otp_verifies_per_email.max(1),
            verify_window_secs: a.otp_verify_window_secs.max(1),
            ip_per_minute: a.otp_ip_per_minute.max(1),
        })
    }
}

/// DPoP (RFC 9449), see docs/PROTOCOL.md.
#[derive(Clone, Args)]
pub struct DpopArgs {
    /// `optional`: logins with a DPoP proof are bound to its key, others are Bearer sessions;
    /// `required`: only bound sessions.
    #[arg(long = "dpop", env = "TW_DPOP", value_enum, default_value_t = DpopMode::Optional)]
    pub mode: DpopMode,

    /// Secret of the DPoP nonces (at least 32 characters), the same on every instance. Default:
    /// generated once and kept in the database.
    #[arg(long, env = "TW_DPOP_NONCE_SECRET", hide_env_values = true)]
    pub dpop_nonce_secret: Option<String>,

    /// A file holding --dpop-nonce-secret (out of the process's arguments and environment).
    #[arg(
        long,
        env = "TW_DPOP_NONCE_SECRET_FILE",
        conflicts_with = "dpop_nonce_secret"
    )]
    pub dpop_nonce_secret_file: Option<PathBuf>,

    /// Origins clients reach this server at (what a proof's `htu` may name), e.g. behind a
    /// proxy. Default: the request's Host header. Repeat or separate with commas.
    #[arg(
        long = "public-origin",
        env = "TW_PUBLIC_ORIGINS",
        value_delimiter = ','
    )]
    pub public_origins: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DpopMode {
    Optional,
    Required,
}

/// The demo user seeded by --demo.
pub const DEMO_EMAIL: &str = "demo@tokenwarden.dev";
pub const DEMO_PASSWORD: &str = "correct horse battery staple";

/// How the accept loop treats connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// Connections at once from one client address bucket ([`crate::net::bucket`]); a trusted
    /// proxy's are not counted (every user comes through it).
    pub max_per_client: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_per_client: 256,
        }
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// The sealer of signing keys: the key file, or `TW_KEY_ENCRYPTION_KEY` (`env_key`), never both
/// (which one an operator meant is not for the server to guess: the file took it silently, and
/// a rotation that changed the other did nothing); else a random key for an in-memory database
/// (nothing is at rest), else with `--demo` a key file created beside the database. Otherwise
/// an error saying what to set.
pub fn key_encryption(
    file: Option<&Path>,
    env_key: Option<&str>,
    database_url: &str,
    demo: bool,
) -> Result<KeyEncryption, String> {
    let env_key = env_key.filter(|k| !k.trim().is_empty());
    if file.is_some() && env_key.is_some() {
        return Err(
            "both --key-encryption-key-file (or TW_KEY_ENCRYPTION_KEY_FILE) and \
             TW_KEY_ENCRYPTION_KEY are set: give the key-encryption key one way"
                .into(),
        );
    }
    if let Some(file) = file {
        return LocalKek::from_file(file).map(KeyEncryption::local);
    }
    if let Some(key) = env_key {
        return LocalKek::parse(key)
            .map(KeyEncryption::local)
            .map_err(|e| format!("TW_KEY_ENCRYPTION_KEY: {e}"));
    }
    // (A PostgreSQL URL is never in memory, whatever its password spells.)
    if crate::store::DatabaseUrl::parse(database_url).is_ok_and(|u| u.in_memory()) {
        return Ok(KeyEncryption::local(LocalKek::ephemeral()));
    }
    if demo
        && (database_url.starts_with("postgres://") || database_url.starts_with("postgresql://"))
    {
        return Err(
            "--demo on PostgreSQL: set TW_KEY_ENCRYPTION_KEY or --key-encryption-key-file (every \
             instance needs the same key-encryption key)"
                .into(),
        );
    }
    if demo {
        let path = database_url
            .strip_prefix("sqlite://")
            .or_else(|| database_url.strip_prefix("sqlite:"))
            .map(|p| p.split('?').next().unwrap_or(p))
            .ok_or_else(|| format!("--demo: cannot place a key file beside {database_url}"))?;
        let key_file = PathBuf::from(format!("{path}.kek"));
        if let Some(parent) = key_file.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        return LocalKek::from_file_or_create(&key_file).map(KeyEncryption::local);
    }
    Err(
        "signing keys are encrypted at rest: set TW_KEY_ENCRYPTION_KEY to 32 random bytes in \
         base64 (`openssl rand -base64 32`) or point --key-encryption-key-file at a file \
         holding them"
            .into(),
    )
}

/// The access tokens' lifetime: `--access-ttl-secs`, or 600 s (30 s with `--demo`).
fn access_ttl(a: &ServeArgs) -> i64 {
    a.access_ttl_secs.unwrap_or(if a.demo { 30 } else { 600 })
}

/// At most ten years: a bound on the arithmetic of every expiry (`now + ttl`).
const TEN_YEARS: i64 = 10 * 366 * 86_400;

/// The signing keys' timings, (grace, publish) seconds, checked as a server checks them: what
/// the `keys` commands run with (they need nothing else of a server's settings).
pub fn key_timings(a: &ServeArgs) -> Result<(i64, i64), String> {
    let access_ttl = access_ttl(a);
    if !(1..=86_400).contains(&access_ttl) {
        return Err("--access-ttl-secs must be between 1 and 86400".into());
    }
    let max_leeway = tokenwarden_dpop::access::MAX_LEEWAY_SECS;
    if !(0..=max_leeway).contains(&a.leeway_secs) {
        return Err(format!("--leeway-secs must be between 0 and {max_leeway}"));
    }
    if !(0..=86_400).contains(&a.jwks_max_age_secs) {
        return Err("--jwks-max-age-secs must be between 0 and 86400".into());
    }
    if a.key_publish_secs < a.jwks_max_age_secs {
        return Err(
            "--key-publish-secs must be at least --jwks-max-age-secs: a verifier's cached \
             JWKS must see the next key before it signs"
                .into(),
        );
    }
    if a.key_grace_secs > TEN_YEARS || a.key_publish_secs > TEN_YEARS {
        return Err("--key-grace-secs and --key-publish-secs must be at most 316224000".into());
    }
    if a.key_grace_secs < access_ttl + a.leeway_secs {
        return Err(
            "--key-grace-secs must be at least the access-token lifetime plus leeway".into(),
        );
    }
    Ok((a.key_grace_secs, a.key_publish_secs))
}

/// Validated settings the server runs with. No `Debug`: it holds secrets (the nonce secret,
/// the feed's token, the legacy backend's secret, the SMTP URL's password).
#[derive(Clone)]
pub struct Settings {
    pub issuer: String,
    pub audience: String,
    pub access_ttl: i64,
    pub idle_ttl: i64,
    pub absolute_ttl: i64,
    pub leeway: i64,
    pub key_grace: i64,
    pub key_poll_secs: u64,
    /// `--key-publish-secs`: a rotated key is published this long before it signs.
    pub key_publish: i64,
    /// `--jwks-max-age-secs`.
    pub jwks_max_age: i64,
    /// The revocation feed's service token (`--revocation-feed-token-file`).
    pub revocation_feed_token: Option<String>,
    /// `--oidc`: the OpenID Connect providers users may sign in with.
    pub oidc: Vec<OidcProvider>,
    /// The server itself serves HTTPS (`--tls-cert`): its own URLs on a loopback host are
    /// `https://`.
    pub https: bool,
    /// Passkeys (`--webauthn-rp-id`), if on.
    pub webauthn: Option<WebauthnSettings>,
    /// `--step-up-max-age-secs`.
    pub step_up_max_age: i64,
    pub allowed_origins: Vec<String>,
    pub connect_src: Vec<String>,
    pub login_max_failures: i64,
    pub login_account_max_failures: i64,
    pub login_window: i64,
    pub login_ip_per_minute: u32,
    pub refresh_ip_per_minute: u32,
    pub refresh_session_per_minute: u32,
    pub rotation: Policy,
    pub proxies: Proxies,
    pub argon2_concurrency: usize,
    pub argon2_queue: usize,
    pub connections: ConnectionLimits,
    pub test_hooks: bool,
    /// Required in `X-Test-Hooks-Secret` by every /test/* route.
    pub test_hooks_secret: String,
    pub key_encryption: KeyEncryption,
    pub demo: bool,
    /// Served at `/` and `/pkg/` when the directories exist.
    pub www_dir: Option<PathBuf>,
    pub pkg_dir: Option<PathBuf>,
    /// `--dpop required`.
    pub dpop_required: bool,
    pub dpop_nonce_secret: Option<String>,
    /// Normalised origins a proof's `htu` may name; empty: the request's Host.
    pub public_origins: Vec<String>,
    /// Most proofs each in-memory DPoP replay cache keeps (`None`: the crate's 2^20; no flag:
    /// tests make it small).
    pub dpop_replay_capacity: Option<usize>,
    /// PostgreSQL: hear revocations by `LISTEN` as well as by the periodic read (crate::fleet).
    /// Always on in the server; tests turn it off to prove the read alone heals.
    pub revocation_notifications: bool,
    /// Sign-in with an emailed code.
    pub otp: OtpSettings,
    /// `--signup password`.
    pub signup_password: bool,
    pub require_verified_email: bool,
    /// `--legacy-login-url` and its secret.
    pub legacy: Option<LegacySettings>,
}

impl Settings {
    /// Settings with the defaults, for tests and embedding.
    pub fn defaults() -> Self {
        Settings {
            issuer: "tokenwarden".into(),
            audience: "tokenwarden-api".into(),
            access_ttl: 600,
            idle_ttl: 14 * 86_400,
            absolute_ttl: 30 * 86_400,
            leeway: 5,
            key_grace: 86_400,
            key_poll_secs: 1,
            key_publish: 120,
            jwks_max_age: 60,
            revocation_feed_token: None,
            oidc: Vec::new(),
            https: false,
            webauthn: None,
            step_up_max_age: 300,
            allowed_origins: Vec::new(),
            connect_src: Vec::new(),
            login_max_failures: 10,
            login_account_max_failures: 50,
            login_window: 900,
            login_ip_per_minute: 60,
            refresh_ip_per_minute: 600,
            refresh_session_per_minute: 30,
            rotation: Policy::default(),
            proxies: Proxies::default(),
            argon2_concurrency: cpus(),
            argon2_queue: 32,
            connections: ConnectionLimits::default(),
            test_hooks: false,
            test_hooks_secret: crate::tokens::random_token(),
            key_encryption: KeyEncryption::local(LocalKek::ephemeral()),
            demo: false,
            www_dir: None,
            pkg_dir: None,
            dpop_required: false,
            dpop_nonce_secret: None,
            public_origins: Vec::new(),
            dpop_replay_capacity: None,
            revocation_notifications: true,
            otp: OtpSettings::default(),
            signup_password: false,
            require_verified_email: false,
            legacy: None,
        }
    }

    pub fn from_args(a: &ServeArgs, key_encryption: KeyEncryption) -> Result<Self, String> {
        let access_ttl = access_ttl(a);
        if a.test_hooks && !cfg!(feature = "test-hooks") {
            return Err(
                "--test-hooks: this binary was built without the `test-hooks` feature \
                        (cargo build --features test-hooks)"
                    .into(),
            );
        }
        if a.test_hooks && !a.bind.ip().is_loopback() {
            return Err("--test-hooks is refused on a non-loopback address".into());
        }
        if a.test_hooks_secret.as_ref().is_some_and(|s| s.len() < 16) {
            return Err("--test-hooks-secret must be at least 16 characters".into());
        }
        if a.demo && !a.demo_public && !a.bind.ip().is_loopback() {
            return Err(
                "--demo publishes its user's password: refused on a non-loopback \
                        address (add --demo-public if that is really what you want)"
                    .into(),
            );
        }
        // Its mailbox shows every emailed code to whoever reaches it, and a proxy on this
        // machine that forwards as a plain client would (nginx's `proxy_pass` alone) is not
        // told apart from a person on it: a demo with these set is behind one.
        let mailbox = a.otp.smtp_url.is_none() && a.otp.smtp_url_file.is_none();
        let proxied = !a.trusted_proxies.is_empty() || !a.dpop.public_origins.is_empty();
        if a.demo && !a.demo_public && mailbox && proxied {
            return Err(
                "--demo behind a proxy (--trusted-proxy or --public-origin): its mailbox would \
                 show every emailed code to whoever reaches it through one; run the demo on its \
                 own, give it --smtp-url, or add --demo-public if that is really what you want"
                    .into(),
            );
        }
        if !(0..=300).contains(&a.rotation_grace_secs) {
            return Err("--rotation-grace-secs must be between 0 and 300".into());
        }
        // The maintenance loop goes at this pace: the purges and the revocation list's pruning
        // too, not only the key ring's re-read.
        if a.key_poll_secs > 60 {
            return Err("--key-poll-secs must be at most 60 (it paces the purges too)".into());
        }
        if a.revocation_feed_token_file.is_some() && a.idle_timeout_secs < 30 {
            return Err(
                "--idle-timeout-secs must be at least 30 with the revocation feed on: its \
                 streams are quiet for 15 s between keepalives, and each reconnection reads \
                 the snapshot again"
                    .into(),
            );
        }
        key_timings(a)?;
        if !(1..=TEN_YEARS).contains(&a.idle_ttl_secs)
            || !(1..=TEN_YEARS).contains(&a.absolute_ttl_secs)
        {
            return Err(
                "--idle-ttl-secs and --absolute-ttl-secs must be between 1 and 316224000 (ten years)"
                    .into(),
            );
        }
        let mut allowed_origins = explicit_origins(&a.allowed_origins, "--allowed-origin")?;
        if let Some(plain) = allowed_origins.iter().find(|o| !secure_origin(o)) {
            return Err(format!(
                "--allowed-origin {plain} is plain http on a host other than this machine: anyone \
                 on its network could put a script in its pages, which the CORS answers would \
                 hand every token; serve the app over https (http only on 127.0.0.1, ::1, \
                 localhost or a name under it)"
            ));
        }
        let connect_src = explicit_origins(&a.connect_src, "--connect-src")?;
        if a.demo {
            let port = a.bind.port();
            let scheme = if a.tls_cert.is_some() {
                "https"
            } else {
                "http"
            };
            for host in ["127.0.0.1", "localhost"] {
                let o = format!("{scheme}://{host}:{port}");
                // As browsers send it (port 80 or 443 left out).
                let o = tokenwarden_dpop::normalize_origin(&o).unwrap_or(o);
                if !allowed_origins.contains(&o) {
                    allowed_origins.push(o);
                }
            }
        }
        let (dpop_nonce_secret, public_origins) = dpop_settings(&a.dpop)?;
        // A directory given, or the demo's own: if it is there.
        let served = |given: &Option<PathBuf>, demo: &str| {
            given
                .clone()
                .or_else(|| a.demo.then(|| PathBuf::from(demo)))
                .filter(|d| d.is_dir())
        };
        Ok(Settings {
            issuer: a.issuer.clone(),
            audience: a.audience.clone(),
            access_ttl,
            idle_ttl: a.idle_ttl_secs,
            absolute_ttl: a.absolute_ttl_secs,
            leeway: a.leeway_secs,
            key_grace: a.key_grace_secs,
            key_poll_secs: a.key_poll_secs.max(1),
            key_publish: a.key_publish_secs,
            jwks_max_age: a.jwks_max_age_secs,
            revocation_feed_token: feed_token(a.revocation_feed_token_file.as_deref())?,
            oidc: oidc_providers(&a.oidc)?,
            https: a.tls_cert.is_some(),
            webauthn: webauthn_settings(a)?,
            step_up_max_age: a.step_up_max_age_secs.max(1),
            allowed_origins,
            connect_src,
            login_max_failures: a.login_max_failures.max(1),
            login_account_max_failures: a.login_account_max_failures.max(1),
            login_window: a.login_window_secs.max(1),
            login_ip_per_minute: a.login_ip_per_minute.max(1),
            refresh_ip_per_minute: a.refresh_ip_per_minute.max(1),
            refresh_session_per_minute: a.refresh_session_per_minute.max(1),
            rotation: Policy {
                grace_secs: a.rotation_grace_secs,
                max_children: a.rotation_max_children.max(1),
            },
            proxies: Proxies {
                trusted: trusted_proxies(&a.trusted_proxies)?,
                header: a.forwarded_header,
            },
            argon2_concurrency: a.argon2_concurrency.unwrap_or_else(cpus).max(1),
            argon2_queue: a.argon2_queue,
            connections: ConnectionLimits {
                header_read_timeout: Duration::from_secs(a.header_read_timeout_secs.max(1)),
                idle_timeout: Duration::from_secs(a.idle_timeout_secs.max(1)),
                max_connections: a.max_connections.max(1),
                max_per_client: a.max_connections_per_client.max(1),
            },
            test_hooks: a.test_hooks,
            test_hooks_secret: a
                .test_hooks_secret
                .clone()
                .unwrap_or_else(crate::tokens::random_token),
            key_encryption,
            demo: a.demo,
            www_dir: served(&a.www_dir, "www"),
            pkg_dir: served(&a.pkg_dir, "pkg"),
            dpop_required: a.dpop.mode == DpopMode::Required,
            dpop_nonce_secret,
            public_origins,
            dpop_replay_capacity: None,
            revocation_notifications: true,
            otp: OtpSettings::from_args(&a.otp)?,
            signup_password: a.accounts.signup == SignupMode::Password || a.demo,
            require_verified_email: a.accounts.require_verified_email,
            legacy: legacy_settings(&a.accounts)?,
        })
    }
}

/// Passkeys: the relying party (WebAuthn).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebauthnSettings {
    pub rp_id: String,
    pub rp_name: String,
    /// Origins (`scheme://host[:port]`) whose pages may use passkeys.
    pub origins: Vec<String>,
}

fn webauthn_settings(a: &ServeArgs) -> Result<Option<WebauthnSettings>, String> {
    let rp_id = match (&a.webauthn_rp_id, a.demo) {
        (Some(id), _) => id.trim().to_ascii_lowercase(),
        (None, true) => "localhost".to_owned(),
        (None, false) => return Ok(None),
    };
    if rp_id.is_empty()
        || rp_id.parse::<std::net::IpAddr>().is_ok()
        || !rp_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(format!(
            "--webauthn-rp-id {rp_id:?} must be a domain (browsers refuse IP addresses)"
        ));
    }
    let mut origins = Vec::new();
    for o in a.webauthn_origins.iter().filter(|o| !o.trim().is_empty()) {
        let n = tokenwarden_dpop::normalize_origin(o)
            .ok_or_else(|| format!("--webauthn-origin {o:?} must be an http(s) origin"))?;
        let host = url::Url::parse(&n)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        if host != rp_id && !host.ends_with(&format!(".{rp_id}")) {
            return Err(format!(
                "--webauthn-origin {o:?} is not within --webauthn-rp-id {rp_id:?}"
            ));
        }
        // As --allowed-origin: a page on plain http elsewhere is anyone's on its network.
        if !secure_origin(&n) {
            return Err(format!(
                "--webauthn-origin {o:?} is plain http on a host other than this machine: serve \
                 the pages over https"
            ));
        }
        origins.push(n);
    }
    if origins.is_empty() {
        origins.push(if a.demo {
            let scheme = if a.tls_cert.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://localhost:{}", a.bind.port())
        } else {
            format!("https://{rp_id}")
        });
    }
    Ok(Some(WebauthnSettings {
        rp_id,
        rp_name: a.webauthn_rp_name.clone(),
        origins,
    }))
}

/// An OpenID Connect provider of `--oidc`.
#[derive(Clone, PartialEq, Eq)]
pub struct OidcProvider {
    /// In the paths (`/auth/oidc/NAME/...`): 1 to 32 of `a-z`, `0-9`, `-`.
    pub name: String,
    /// Exactly as the provider's discovery document states it.
    pub issuer: String,
    pub client_id: String,
    /// Read from `client-secret-file`.
    pub client_secret: String,
    /// Always with `openid`.
    pub scopes: Vec<String>,
    /// `link=verified-email`.
    pub link_verified_email: bool,
    /// `prompt=login` (or `select_account`, `consent`): the provider asks the user at every
    /// sign-in, never signs in silently (a script in the page could otherwise start one with a
    /// key of its choosing and get the session, the user none the wiser).
    pub prompt: Option<String>,
}

impl std::fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProvider")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("scopes", &self.scopes)
            .field("link_verified_email", &self.link_verified_email)
            .field("prompt", &self.prompt)
            .finish_non_exhaustive()
    }
}

/// Whether `url` may be a provider's: https, or http to a loopback host (a provider on this
/// machine, in development and tests).
pub fn provider_url_ok(url: &str) -> bool {
    // Nor a control character or a space, which URL parsing drops (a tab, a line break) where
    // the text, logged as the provider wrote it, would start a forged line of the log.
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return false;
    }
    let Ok(u) = url::Url::parse(url) else {
        return false;
    };
    if !u.username().is_empty() || u.password().is_some() || u.fragment().is_some() {
        return false;
    }
    match (u.scheme(), u.host_str()) {
        ("https", Some(_)) => true,
        ("http", Some(h)) => tokenwarden_dpop::is_loopback_host(h),
        _ => false,
    }
}

/// One `--oidc` value.
pub fn oidc_provider(spec: &str) -> Result<OidcProvider, String> {
    let mut fields = std::collections::HashMap::new();
    for part in spec.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("--oidc: {part:?} is not key=value"))?;
        let k = k.trim();
        if ![
            "name",
            "issuer",
            "client-id",
            "client-secret-file",
            "scopes",
            "link",
            "prompt",
        ]
        .contains(&k)
        {
            return Err(format!(
                "--oidc: unknown key {k:?} (name, issuer, client-id, client-secret-file, scopes, \
                 link, prompt)"
            ));
        }
        if fields.insert(k, v.trim()).is_some() {
            return Err(format!("--oidc: {k} given twice"));
        }
    }
    let get = |k: &str| {
        fields
            .get(k)
            .copied()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("--oidc: {k}= is required"))
    };
    let name = get("name")?;
    if name.len() > 32
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!(
            "--oidc: name {name:?} must be 1 to 32 of a-z, 0-9 and -"
        ));
    }
    let issuer = get("issuer")?;
    if !provider_url_ok(issuer) || issuer.contains('?') {
        return Err(format!(
            "--oidc {name}: issuer {issuer:?} must be an https URL (http only on a loopback host)"
        ));
    }
    let client_id = get("client-id")?;
    let file = get("client-secret-file")?;
    let client_secret = crate::kek::read_secret_text(Path::new(file))
        .map_err(|e| format!("--oidc {name}: client-secret-file {e}"))?;
    if client_secret.is_empty() {
        return Err(format!("--oidc {name}: client-secret-file {file} is empty"));
    }
    let mut scopes: Vec<String> = fields
        .get("scopes")
        .copied()
        .unwrap_or("openid email profile")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if !scopes.iter().any(|s| s == "openid") {
        scopes.insert(0, "openid".into());
    }
    let link_verified_email = match fields.get("link").copied() {
        None | Some("none") => false,
        Some("verified-email") => true,
        Some(other) => {
            return Err(format!(
                "--oidc {name}: link={other:?}: only link=verified-email (or none)"
            ));
        }
    };
    // Each a way the provider asks the user (OpenID Connect Core 3.1.2.1), never `none`.
    let prompt = match fields.get("prompt").copied() {
        None => None,
        Some(p)
            if !p.is_empty()
                && p.split_whitespace()
                    .all(|w| ["login", "select_account", "consent"].contains(&w)) =>
        {
            Some(p.split_whitespace().collect::<Vec<_>>().join(" "))
        }
        Some(other) => {
            return Err(format!(
                "--oidc {name}: prompt={other:?}: login, select_account or consent (a sign-in \
                 the provider asks the user for)"
            ));
        }
    };
    Ok(OidcProvider {
        name: name.to_owned(),
        issuer: issuer.to_owned(),
        client_id: client_id.to_owned(),
        client_secret,
        scopes,
        link_verified_email,
        prompt,
    })
}

fn oidc_providers(specs: &[String]) -> Result<Vec<OidcProvider>, String> {
    let mut out: Vec<OidcProvider> = Vec::new();
    for spec in specs.iter().filter(|s| !s.trim().is_empty()) {
        let p = oidc_provider(spec)?;
        if out.iter().any(|o| o.name == p.name) {
            return Err(format!("--oidc: two providers named {:?}", p.name));
        }
        out.push(p);
    }
    Ok(out)
}

fn feed_token(file: Option<&Path>) -> Result<Option<String>, String> {
    let Some(file) = file else {
        return Ok(None);
    };
    let token = crate::kek::read_secret_text(file)
        .map_err(|e| format!("--revocation-feed-token-file {e}"))?;
    if token.len() < 32 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "the revocation feed's token must be at least 32 visible characters (e.g. \
             `openssl rand -base64 32`)"
                .into(),
        );
    }
    Ok(Some(token))
}

fn legacy_settings(a: &AccountArgs) -> Result<Option<LegacySettings>, String> {
    let Some(url) = a.legacy_login_url.clone().filter(|u| !u.trim().is_empty()) else {
        return Ok(None);
    };
    let file = a
        .legacy_login_secret_file
        .as_ref()
        .ok_or("--legacy-login-url needs --legacy-login-secret-file")?;
    let secret = crate::kek::read_secret_text(file)
        .map_err(|e| format!("--legacy-login-secret-file {e}"))?;
    // It goes into a header: visible characters only (a stray CR would fail every question
    // later, as a 503, instead of here).
    if !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "the legacy backend's shared secret must be visible characters (no spaces or line breaks)"
                .into(),
        );
    }
    Ok(Some(LegacySettings {
        url,
        secret,
        timeout: Duration::from_millis(a.legacy_login_timeout_ms.clamp(100, 30_000)),
    }))
}

type DpopSettings = (Option<String>, Vec<String>);

fn dpop_settings(a: &DpopArgs) -> Result<DpopSettings, String> {
    let secret = secret_or_file(
        a.dpop_nonce_secret.as_ref(),
        a.dpop_nonce_secret_file.as_deref(),
        "--dpop-nonce-secret",
    )?;
    if secret.as_ref().is_some_and(|s| s.len() < 32) {
        return Err("--dpop-nonce-secret must be at least 32 characters".into());
    }
    let mut origins = Vec::new();
    for o in a.public_origins.iter().filter(|o| !o.trim().is_empty()) {
        origins.push(
            tokenwarden_dpop::normalize_origin(o)
                .ok_or_else(|| format!("--public-origin {o:?} must be an http(s) origin"))?,
        );
    }
    Ok((secret, origins))
}

/// A secret given as a flag's value or as a file holding it (`<flag>-file`: a Docker or
/// Kubernetes secret, never in the process's arguments or environment), whichever is set (clap
/// refuses both). Either without surrounding white space; an empty file is an error.
pub fn secret_or_file(
    value: Option<&String>,
    file: Option<&Path>,
    flag: &str,
) -> Result<Option<String>, String> {
    // A value trimmed as a file's text is (an environment variable filled from a secret file
    // keeps its newline): the verifiers trim theirs, and the two must be the same secret.
    let Some(file) = file else {
        return Ok(value.map(|v| v.trim().to_owned()));
    };
    let text = crate::kek::read_secret_text(file).map_err(|e| format!("{flag}-file {e}"))?;
    if text.is_empty() {
        return Err(format!("{flag}-file {} is empty", file.display()));
    }
    Ok(Some(text))
}

/// `--trusted-proxy`: a range of every address (`0.0.0.0/0`, `::/0`) is refused. Every client
/// would then be a trusted proxy: each would choose the address its throttles count by writing
/// the forwarding header, and none would be held to `--max-connections-per-client`. A range of
/// IPv4-mapped addresses (`::ffff:10.0.0.5/128`) is its IPv4 range: peers are compared as IPv4,
/// so it matched nothing and every user shared the proxy's bucket.
/// Nor is a range wider than any proxies' network: an IPv4 one wider than a /8 (`10.0.0.0/8`
/// is the widest private one), an IPv6 one wider than a /7 (`fc00::/7`, every unique local
/// address): `0.0.0.0/1` and `128.0.0.0/1` are every address in two, `2000::/3` every global
/// IPv6 one.
fn trusted_proxies(list: &[IpNet]) -> Result<Vec<IpNet>, String> {
    let nets: Vec<IpNet> = list
        .iter()
        .map(|net| match net {
            IpNet::V6(v6) if v6.prefix_len() >= 96 => crate::net::embedded_ipv4(v6.addr())
                .and_then(|v4| ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).ok())
                .map_or(*net, IpNet::V4),
            _ => *net,
        })
        .collect();
    // (After the mapping: `::ffff:0.0.0.0/96` is every IPv4 address.)
    if let Some((given, _)) = list.iter().zip(&nets).find(|(_, n)| n.prefix_len() == 0) {
        return Err(format!(
            "--trusted-proxy {given} trusts every address: each client would choose the address \
             its throttles count; list the proxies' own addresses"
        ));
    }
    let wide = |n: &IpNet| match n {
        IpNet::V4(v4) => v4.prefix_len() < 8,
        IpNet::V6(v6) => v6.prefix_len() < 7,
    };
    if let Some((given, _)) = list.iter().zip(&nets).find(|(_, n)| wide(n)) {
        return Err(format!(
            "--trusted-proxy {given} is wider than any proxies' network (at most a /8 of IPv4, \
             a /7 of IPv6): each client in it would choose the address its throttles count; \
             list the proxies' own addresses"
        ));
    }
    Ok(nets)
}

/// An origin whose pages no one on the network can change: https, or plain http on this
/// machine (a development server): a loopback address, `localhost`, or a name under it
/// (`app.localhost`), which browsers resolve to loopback themselves and count as a secure
/// context (RFC 6761 §6.3, the Secure Contexts spec's "potentially trustworthy").
fn secure_origin(origin: &str) -> bool {
    origin.strip_prefix("http://").is_none_or(|host| {
        let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
        tokenwarden_dpop::is_loopback_host(host)
            || name
                .to_ascii_lowercase()
                .strip_suffix(".localhost")
                .is_some_and(|sub| !sub.is_empty() && !sub.ends_with('.'))
    })
}

/// `--allowed-origin`'s or `--connect-src`'s origins (`flag`), each as browsers send an
/// `Origin` (RFC 6454: the host lower-cased, no default port, no slash): CORS compares them as
/// bytes, and `https://App.example.com:443/` would otherwise match no browser's request.
fn explicit_origins(list: &[String], flag: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for o in list {
        let o = o.trim().trim_end_matches('/');
        if o.is_empty() {
            continue;
        }
        // Scheme and host only: nothing that could end the header value or add a directive
        // (`;`, quotes, spaces).
        let host = o
            .split_once("://")
            .filter(|(scheme, _)| {
                scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")
            })
            .map_or("", |(_, host)| host);
        let explicit = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
        match tokenwarden_dpop::normalize_origin(o).filter(|_| explicit) {
            Some(origin) => out.push(origin),
            None => return Err(format!("{flag} {o:?} must be an explicit http(s) origin")),
        }
    }
    Ok(out)
}

impl Cli {
    /// `--database-url`, or what `--database-url-file` holds.
    pub fn database_url(&self) -> Result<String, String> {
        let url = secret_or_file(
            Some(&self.database_url),
            self.database_url_file.as_deref(),
            "--database-url",
        )?;
        Ok(url.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a SQLite database in memory gets a throwaway key-encryption key: a PostgreSQL URL
    /// whose password spells `:memory:` got one (each instance its own, a restart's keys lost).
    #[test]
    fn only_a_database_in_memory_gets_a_throwaway_key_encryption_key() {
        assert!(key_encryption(None, None, "sqlite::memory:", false).is_ok());
        let e = key_encryption(None, None, "postgres://tw:x:memory:y@db/tw", false)
            .err()
            .unwrap();
        assert!(e.contains("TW_KEY_ENCRYPTION_KEY"), "{e}");
    }

    #[test]
    fn a_key_encryption_key_given_both_as_a_file_and_in_the_environment_is_refused() {
        let key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
        let file = Path::new("/nonexistent/kek");
        let e = key_encryption(Some(file), Some(key), "sqlite:tw.db", false)
            .err()
            .unwrap();
        assert!(e.contains("one way"), "{e}");
        // An empty variable is unset, as before.
        let e = key_encryption(Some(file), Some(" "), "sqlite:tw.db", false)
            .err()
            .unwrap();
        assert!(e.contains("/nonexistent/kek"), "{e}");
    }

    #[test]
    fn a_trusted_proxy_range_of_every_address_is_refused() {
        let nets = |v: &[&str]| v.iter().map(|n| n.parse().unwrap()).collect::<Vec<IpNet>>();
        for all in ["0.0.0.0/0", "::/0", "::ffff:0.0.0.0/96"] {
            let e = trusted_proxies(&nets(&["10.0.0.5/32", all])).unwrap_err();
            assert!(e.contains(all) && e.contains("every address"), "{e}");
        }
        for wide in [
            "0.0.0.0/1",
            "128.0.0.0/1",
            "2000::/3",
            "::/1",
            "::ffff:0.0.0.0/97",
        ] {
            let e = trusted_proxies(&nets(&["10.0.0.5/32", wide])).unwrap_err();
            assert!(e.contains(wide) && e.contains("wider than"), "{e}");
        }
        let ok = nets(&["10.0.0.0/8", "127.0.0.1/32", "fd00::/8", "fc00::/7"]);
        assert_eq!(trusted_proxies(&ok).unwrap(), ok);
        // NAT64's well-known prefix: the IPv4 range, as peers are compared (a global one: no
        // other is under it).
        assert_eq!(
            trusted_proxies(&nets(&["64:ff9b::93.184.215.0/120"])).unwrap(),
            nets(&["93.184.215.0/24"])
        );
        // IPv4-mapped: the IPv4 range (peers are compared as IPv4).
        let mapped = nets(&["::ffff:10.0.0.5/128", "::ffff:192.168.0.0/112"]);
        assert_eq!(
            trusted_proxies(&mapped).unwrap(),
            nets(&["10.0.0.5/32", "192.168.0.0/16"])
        );
    }

    #[test]
    fn origins_are_kept_as_browsers_send_them() {
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            explicit_origins(
                &list(&["HTTPS://App.Example.com:443/", "http://app.test:3000", " "]),
                "--allowed-origin"
            )
            .unwrap(),
            ["https://app.example.com", "http://app.test:3000"]
        );
        for bad in [
            "*",
            "null",
            "https://a.example/path",
            "https://a b",
            "ftp://a.example",
        ] {
            assert!(
                explicit_origins(&list(&[bad]), "--allowed-origin").is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_secret_given_as_a_value_is_trimmed_as_a_file_s_text_is() {
        let value = "0123456789abcdef0123456789abcdef\n".to_owned();
        assert_eq!(
            secret_or_file(Some(&value), None, "--dpop-nonce-secret").unwrap(),
            Some("0123456789abcdef0123456789abcdef".to_owned())
        );
    }

    #[test]
    fn an_allowed_origin_on_plain_http_is_this_machine_s() {
        for ok in [
            "https://app.example.com",
            "http://127.0.0.1:5173",
            "http://localhost:3000",
            "http://[::1]:8080",
            "http://localhost",
            "http://app.localhost:5173",
            "http://App.LocalHost",
        ] {
            assert!(secure_origin(ok), "{ok}");
        }
        for plain in [
            "http://app.example.com",
            "http://10.0.0.5:3000",
            "http://app.test:3000",
            "http://localhost.example.com",
            "http://evillocalhost:3000",
            "http://.localhost",
        ] {
            assert!(!secure_origin(plain), "{plain}");
        }
    }

    #[test]
    fn an_oidc_provider_is_read_from_its_spec() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let file = secret.display();
        let p = oidc_provider(&format!(
            "name=corp,issuer=https://login.example.com/tenant/v2.0,client-id=abc,client-secret-file={file},scopes=email profile,link=verified-email"
        ))
        .unwrap();
        assert_eq!(p.client_secret, "s3cret");
        assert_eq!(p.scopes, ["openid", "email", "profile"]);
        assert!(p.link_verified_email);
        assert_eq!(p.prompt, None);
        let asks = oidc_provider(&format!(
            "name=corp,issuer=https://x,client-id=a,client-secret-file={file},prompt=login"
        ));
        assert_eq!(asks.unwrap().prompt.as_deref(), Some("login"));
        assert!(
            !format!("{p:?}").contains("s3cret"),
            "the secret is never printed"
        );
        let local =
            format!("name=idp,issuer=http://127.0.0.1:9000,client-id=a,client-secret-file={file}");
        assert_eq!(
            oidc_provider(&local).unwrap().scopes,
            ["openid", "email", "profile"]
        );
        for bad in [
            format!("name=Corp,issuer=https://x,client-id=a,client-secret-file={file}"),
            format!("name=c,issuer=http://idp.example,client-id=a,client-secret-file={file}"),
            format!("name=c,issuer=https://x,client-secret-file={file}"),
            format!("name=c,issuer=https://x,client-id=a,client-secret-file={file},link=email"),
            format!("name=c,issuer=https://x,client-id=a,client-secret-file={file},colour=red"),
            format!("name=c,issuer=https://x,client-id=a,client-secret-file={file},prompt=none"),
            format!("name=c,issuer=https://x,client-id=a,client-secret-file={file},prompt="),
            "name=c,issuer=https://x,client-id=a,client-secret-file=/nonexistent".to_owned(),
        ] {
            assert!(oidc_provider(&bad).is_err(), "{bad}");
        }
        assert!(
            oidc_providers(&[local.clone(), local]).is_err(),
            "two of one name"
        );
    }
}
