//! Command line and environment. Every option has a `TW_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tokenwarden-server",
    version,
    about = "Reference auth server for tokenwarden: rotating refresh tokens with reuse detection, \
             user-visible sessions, EdDSA access tokens with key rotation"
)]
pub struct Cli {
    /// Database URL: `sqlite://path/file.db` or `sqlite::memory:`.
    #[arg(
        long,
        env = "TW_DATABASE_URL",
        default_value = "sqlite://data/tokenwarden.db",
        global = true
    )]
    pub database_url: String,

    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
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
    /// Graceful rotation: a new key signs; the old one verifies for --key-grace-secs.
    Rotate,
    /// Emergency revocation: tokens signed by KID are refused at once (clients refresh).
    Revoke {
        /// Base64url, so it may start with `-`: taken as the kid, not as an option.
        #[arg(allow_hyphen_values = true)]
        kid: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user. The password is read from TW_PASSWORD or prompted on stdin.
    Add {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        #[arg(long, env = "TW_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "TW_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// Demo mode: seed the demo user, 30 s access tokens, allow this server's own origin.
    #[arg(long, env = "TW_DEMO")]
    pub demo: bool,

    /// Enable /test/* hooks (counters, faults, clock). Refused on a non-loopback address.
    #[arg(long, env = "TW_TEST_HOOKS")]
    pub test_hooks: bool,

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

    /// How often the server re-reads signing keys changed by `keys rotate|revoke`.
    #[arg(long, env = "TW_KEY_POLL_SECS", default_value_t = 1)]
    pub key_poll_secs: u64,

    /// Origins allowed by CORS (with credentials). Repeat or separate with commas.
    #[arg(
        long = "allowed-origin",
        env = "TW_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Failed logins per account within --login-window-secs before 429.
    #[arg(long, env = "TW_LOGIN_MAX_FAILURES", default_value_t = 10)]
    pub login_max_failures: i64,

    #[arg(long, env = "TW_LOGIN_WINDOW_SECS", default_value_t = 900)]
    pub login_window_secs: i64,

    /// Login attempts per client IP per minute.
    #[arg(long, env = "TW_LOGIN_IP_PER_MINUTE", default_value_t = 60)]
    pub login_ip_per_minute: u32,

    /// Directory served at / (the demo SPA), if it exists.
    #[arg(long, env = "TW_WWW_DIR", default_value = "www")]
    pub www_dir: PathBuf,

    /// Directory served at /pkg/ (the npm package), if it exists.
    #[arg(long, env = "TW_PKG_DIR", default_value = "pkg")]
    pub pkg_dir: PathBuf,

    /// Serve HTTPS with this PEM certificate chain (and --tls-key). Safari and WebKit refuse
    /// `Secure` cookies over plain http, even on localhost.
    #[arg(long, env = "TW_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, env = "TW_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// The demo user seeded by --demo.
pub const DEMO_EMAIL: &str = "demo@tokenwarden.dev";
pub const DEMO_PASSWORD: &str = "correct horse battery staple";

/// Validated settings the server runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub issuer: String,
    pub audience: String,
    pub access_ttl: i64,
    pub idle_ttl: i64,
    pub absolute_ttl: i64,
    pub leeway: i64,
    pub key_grace: i64,
    pub key_poll_secs: u64,
    pub allowed_origins: Vec<String>,
    pub login_max_failures: i64,
    pub login_window: i64,
    pub login_ip_per_minute: u32,
    pub test_hooks: bool,
    pub demo: bool,
    /// Served at `/` and `/pkg/` when the directories exist.
    pub www_dir: Option<PathBuf>,
    pub pkg_dir: Option<PathBuf>,
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
            allowed_origins: Vec::new(),
            login_max_failures: 10,
            login_window: 900,
            login_ip_per_minute: 60,
            test_hooks: false,
            demo: false,
            www_dir: None,
            pkg_dir: None,
        }
    }

    pub fn from_args(a: &ServeArgs) -> Result<Self, String> {
        let access_ttl = a.access_ttl_secs.unwrap_or(if a.demo { 30 } else { 600 });
        if a.test_hooks && !a.bind.ip().is_loopback() {
            return Err("--test-hooks is refused on a non-loopback address".into());
        }
        if !(1..=86_400).contains(&access_ttl) {
            return Err("--access-ttl-secs must be between 1 and 86400".into());
        }
        if !(0..=30).contains(&a.leeway_secs) {
            return Err("--leeway-secs must be between 0 and 30".into());
        }
        if a.idle_ttl_secs < 1 || a.absolute_ttl_secs < 1 {
            return Err("--idle-ttl-secs and --absolute-ttl-secs must be positive".into());
        }
        if a.key_grace_secs < access_ttl + a.leeway_secs {
            return Err(
                "--key-grace-secs must be at least the access-token lifetime plus leeway".into(),
            );
        }
        let mut allowed_origins = Vec::new();
        for o in &a.allowed_origins {
            let o = o.trim().trim_end_matches('/');
            if o.is_empty() {
                continue;
            }
            if o == "*" || !(o.starts_with("http://") || o.starts_with("https://")) {
                return Err(format!(
                    "--allowed-origin {o:?} must be an explicit http(s) origin"
                ));
            }
            allowed_origins.push(o.to_owned());
        }
        if a.demo {
            let port = a.bind.port();
            let scheme = if a.tls_cert.is_some() {
                "https"
            } else {
                "http"
            };
            for host in ["127.0.0.1", "localhost"] {
                let o = format!("{scheme}://{host}:{port}");
                if !allowed_origins.contains(&o) {
                    allowed_origins.push(o);
                }
            }
        }
        Ok(Settings {
            issuer: a.issuer.clone(),
            audience: a.audience.clone(),
            access_ttl,
            idle_ttl: a.idle_ttl_secs,
            absolute_ttl: a.absolute_ttl_secs,
            leeway: a.leeway_secs,
            key_grace: a.key_grace_secs,
            key_poll_secs: a.key_poll_secs.max(1),
            allowed_origins,
            login_max_failures: a.login_max_failures.max(1),
            login_window: a.login_window_secs.max(1),
            login_ip_per_minute: a.login_ip_per_minute.max(1),
            test_hooks: a.test_hooks,
            demo: a.demo,
            www_dir: Some(a.www_dir.clone()).filter(|d| d.is_dir()),
            pkg_dir: Some(a.pkg_dir.clone()).filter(|d| d.is_dir()),
        })
    }
}
