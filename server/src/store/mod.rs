//! Storage: one interface over SQLite (one instance, nothing to install) or PostgreSQL (any
//! number of instances sharing one database). The rest of the server never sees SQL or a pool.
//!
//! Every statement is written once, in the SQL both dialects accept (`$N` placeholders, `CAST`,
//! `ON CONFLICT`, `RETURNING`), and runs through sqlx's `Any` driver on either backend. The few
//! that cannot be shared are named in [`dialect`]: the rotation's single PostgreSQL statement,
//! `NOTIFY`, row and advisory locks, the catch-up read of recent events.
//!
//! Rules live outside: whether a refresh rotates, revokes or is refused is
//! `rotation::plan`, a pure function; a store only loads the state it needs and executes the
//! plan. Each concern has its file: users, sessions (and their refresh tokens), signing keys,
//! revocations (deny-list and events), counters (throttles and attempts), sign-in codes, DPoP
//! proofs and shared secrets.

/// `sqlx::query(sql)` with `args` bound in order (`$1`, `$2`, …).
macro_rules! q {
    ($sql:expr $(, $arg:expr)* $(,)?) => { sqlx::query($sql)$(.bind($arg))* };
}

/// `sqlx::query_as(sql)` (rows as a `FromRow` type) with `args` bound in order.
macro_rules! q_as {
    ($sql:expr $(, $arg:expr)* $(,)?) => { sqlx::query_as($sql)$(.bind($arg))* };
}

/// `sqlx::query_scalar(sql)` (the first column) with `args` bound in order.
macro_rules! q_scalar {
    ($sql:expr $(, $arg:expr)* $(,)?) => { sqlx::query_scalar($sql)$(.bind($arg))* };
}

/// A struct read from a row by its fields' names, as `#[derive(sqlx::FromRow)]` writes it
/// (without sqlx's macros: `build.rs` says why).
macro_rules! row {
    ($(#[$meta:meta])* $vis:vis struct $name:ident {
        $($(#[$field_meta:meta])* $field_vis:vis $field:ident: $ty:ty),* $(,)?
    }) => {
        $(#[$meta])* $vis struct $name { $($(#[$field_meta])* $field_vis $field: $ty),* }
        impl<'r, R: sqlx::Row> sqlx::FromRow<'r, R> for $name
        where
            &'r str: sqlx::ColumnIndex<R>,
            $($ty: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,)*
        {
            fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
                Ok(Self { $($field: row.try_get(stringify!($field))?),* })
            }
        }
    };
}

/// The columns of a [`UserRow`], for statements that return users.
macro_rules! user_columns {
    () => {
        "id, email, name, phone, roles, email_verified_at, claims"
    };
}

mod codes;
mod counters;
/// The migrations, listed by `build.rs`.
mod migrations {
    include!(concat!(env!("OUT_DIR"), "/migrations.rs"));
}
pub mod dialect;
mod inline;
mod keys;
pub mod oidc;
pub mod passkeys;
mod proofs;
mod revocations;
mod secrets;
mod sessions;
mod users;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};

pub use codes::{CodePurpose, Counted, PendingSignup};
pub use counters::CounterScope;
pub use dialect::Dialect;
pub use passkeys::{NewPassword, Replaced};
pub use revocations::{EventKind, Heard, Listener, RevocationEvent};
pub use secrets::SealedKeyError;
pub use sessions::{
    Applied, Authentication, Created, NewSession, Presentation, PresentedToken, RevokeReason,
};
pub use users::{NAME_RULE, NewUser, name_from_address, valid_name};

/// Failures of the storage layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// `--database-url` names neither SQLite nor PostgreSQL.
    #[error(
        "unsupported database URL {0:?}: use sqlite://FILE, sqlite::memory:, a file path, or \
         postgres://USER:PASSWORD@HOST:PORT/DATABASE"
    )]
    UnsupportedUrl(String),
    /// The database refused or failed a statement, or the connection broke.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// TLS to PostgreSQL failed: no TLS there, or a certificate not verified.
    #[error(
        "database: {0} (a PostgreSQL host off this machine is reached over TLS with its \
         certificate verified, sslmode=verify-full, unless the URL or PGSSLMODE names an \
         sslmode: add \
         sslrootcert=FILE for a private certificate authority, sslmode=verify-ca if the \
         certificate names another host, sslmode=require to take any certificate, or \
         sslmode=disable to connect in the clear)"
    )]
    Tls(sqlx::Error),
    /// `PGSSLMODE` is set to something that is no sslmode.
    #[error(
        "PGSSLMODE={0:?} is no sslmode: disable, allow, prefer, require, verify-ca or verify-full"
    )]
    SslMode(String),
    /// The schema could not be brought up to date.
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Creating the SQLite file or its directory failed.
    #[error("database file: {0}")]
    File(#[from] std::io::Error),
    /// A statement run on behalf of several requests at once failed (its message).
    #[error("database: {0}")]
    Batch(String),
    /// A stored value the server cannot have written (a corrupted or foreign row).
    #[error("unexpected value in the database: {0}")]
    Corrupt(String),
    /// PostgreSQL's transactions would not be READ COMMITTED on the server's connections.
    #[error(
        "database: transactions here are {0:?}, and the server's locks need READ COMMITTED \
         (a connection pooler that drops session settings? connect to PostgreSQL directly, or \
         in session mode)"
    )]
    Isolation(String),
}

/// How long a shared DPoP proof's row is kept past the time it can pass the `iat` check by
/// (`Store::purge_short_lived`), for instances whose clocks lag.
pub const PROOF_ROWS_KEPT_PAST: i64 = 600;

/// How many generations of a session's refresh tokens are kept behind its newest
/// ([`Store::purge_superseded`]): a week of a session refreshed every ten minutes.
pub const KEPT_GENERATIONS: i64 = 1_000;

impl StoreError {
    /// A transaction PostgreSQL ended to break a lock cycle, or a serialisation conflict; or
    /// SQLite busy past its timeout, or a transaction whose read another process's write made
    /// stale before it could write (`SQLITE_BUSY_SNAPSHOT`: `users add` or `keys rotate` on a
    /// running server's file): nothing of it was written, and the same request again goes
    /// through.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(e)) => matches!(
                e.code().as_deref(),
                // PostgreSQL's SQLSTATEs; SQLite's (extended) result codes: BUSY, and its
                // RECOVERY, SNAPSHOT and TIMEOUT.
                Some("40P01" | "40001" | "5" | "261" | "517" | "773")
            ),
            _ => false,
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// `url` without anything that may be a password, for messages: its user-info part's
/// (`scheme://user:…@host`), its query (`?password=`, a JDBC URL's), and a libpq keyword string
/// (`host=… password=…`) whole.
fn redact(url: &str) -> String {
    let strip = |rest: &str| match rest.split_once('?') {
        Some((rest, _)) => format!("{rest}?…"),
        None => rest.to_owned(),
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return match url.rsplit_once('@') {
            _ if url.contains('=') => "…".into(),
            Some((_, host)) => format!("…@{}", strip(host)),
            None => strip(url),
        };
    };
    // Everything before the last `@` may hold a password (one with a `?` or a `/` in it too),
    // unless that `@` is in the query (`?user=me@srv&password=…`): then only the scheme.
    match rest.rsplit_once('@') {
        None => format!("{scheme}://{}", strip(rest)),
        Some((_, host))
            if host
                .split('/')
                .next()
                .is_some_and(|h| h.contains(['=', '&'])) =>
        {
            format!("{scheme}://…")
        }
        Some((userinfo, host)) => match userinfo.split(':').next() {
            Some(user) if !user.contains(['/', '?', '=', '&']) => {
                format!("{scheme}://{user}:…@{}", strip(host))
            }
            _ => format!("{scheme}://…@{}", strip(host)),
        },
    }
}

/// `url` (PostgreSQL) with `sslmode=verify-full` added when it names no `sslmode` (and
/// `PGSSLMODE` none either) and its host is not this machine: libpq's default, `prefer`, falls
/// back to the clear and takes any certificate, so anything on the way would read and change
/// every hash, sealed key and session row. Loopback and a Unix socket keep the driver's default;
/// an `sslmode` in the URL (`disable` to connect in the clear) is the operator's choice.
fn with_verified_tls(url: &str) -> StoreResult<String> {
    verified_tls(url, std::env::var("PGSSLMODE").ok())
}

/// [`with_verified_tls`] with `PGSSLMODE` given.
fn verified_tls(url: &str, pgsslmode: Option<String>) -> StoreResult<String> {
    let options = sqlx::postgres::PgConnectOptions::from_str(url)?;
    let query = url.split_once('?').map_or("", |(_, q)| q);
    // `PGSSLMODE` names one only if it is one: the driver takes an empty or misspelt value
    // for its default, `prefer`.
    let named = query
        .split('&')
        .any(|p| matches!(p.split('=').next(), Some("sslmode" | "ssl-mode")))
        || match pgsslmode {
            Some(mode) => {
                sqlx::postgres::PgSslMode::from_str(&mode)
                    .map_err(|_| StoreError::SslMode(mode))?;
                true
            }
            None => false,
        };
    let host = options.get_host();
    let local = options.get_socket().is_some()
        || host.starts_with('/')
        || tokenwarden_dpop::is_loopback_host(host);
    Ok(if named || local {
        url.to_owned()
    } else {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}sslmode=verify-full")
    })
}

/// Which backend a `--database-url` selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A `sqlite:` URL (a bare path is turned into one).
    Sqlite(String),
    Postgres(String),
}

impl DatabaseUrl {
    /// `sqlite:…`, `postgres://…`, `postgresql://…`, or a file path (no `scheme:` in front).
    /// Any other scheme is refused rather than taken for a file name.
    pub fn parse(url: &str) -> StoreResult<Self> {
        let url = url.trim();
        if url.is_empty() {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DatabaseUrl::Postgres(url.to_owned()));
        }
        if url.starts_with("sqlite:") {
            return Ok(DatabaseUrl::Sqlite(url.to_owned()));
        }
        // A libpq keyword string (`host=db user=tw password=…`) is no file name: it would have
        // become a SQLite file named after it, password and all.
        if url.contains('=') {
            return Err(StoreError::UnsupportedUrl(redact(url)));
        }
        // `scheme:` per RFC 3986: a letter, then letters, digits, `+`, `-`, `.`.
        let scheme = url.split_once(':').map(|(s, _)| s).filter(|s| {
            s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        });
        match scheme {
            Some(_) => Err(StoreError::UnsupportedUrl(redact(url))),
            None => Ok(DatabaseUrl::Sqlite(format!("sqlite://{url}"))),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            DatabaseUrl::Sqlite(u) | DatabaseUrl::Postgres(u) => u,
        }
    }

    /// Whether nothing outlives the process (`sqlite::memory:`).
    pub fn in_memory(&self) -> bool {
        matches!(self, DatabaseUrl::Sqlite(u) if u.contains(":memory:") || u.contains("mode=memory"))
    }

    /// The SQLite file (none in memory, none for PostgreSQL).
    pub fn sqlite_file(&self) -> Option<std::path::PathBuf> {
        match self {
            DatabaseUrl::Sqlite(u) if !self.in_memory() => {
                sqlx::sqlite::SqliteConnectOptions::from_str(u)
                    .ok()
                    .map(|o| o.get_filename().to_path_buf())
            }
            _ => None,
        }
    }

    /// "SQLite" or "PostgreSQL", for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            DatabaseUrl::Sqlite(_) => "SQLite",
            DatabaseUrl::Postgres(_) => "PostgreSQL",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: String,
    pub phone: Option<String>,
    pub roles: Vec<String>,
    /// The address was shown to be the user's (a code mailed there came back, or an import or
    /// the legacy backend said so).
    pub email_verified: bool,
    /// Claims the app owns, copied into every access token.
    pub claims: serde_json::Map<String, serde_json::Value>,
}

row! {
    /// `users` as stored (roles are one comma-separated column, claims a JSON object).
    struct UserRow {
        id: String,
        email: String,
        name: String,
        phone: Option<String>,
        roles: String,
        email_verified_at: Option<i64>,
        claims: String,
    }
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> Self {
        User {
            id: r.id,
            email: r.email,
            name: r.name,
            phone: r.phone,
            roles: r
                .roles
                .split(',')
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .collect(),
            email_verified: r.email_verified_at.is_some(),
            // Written by this server from an object; anything else reads as none.
            claims: serde_json::from_str(&r.claims).unwrap_or_default(),
        }
    }
}

/// A user by id, as a [`UserRow`].
const USER_BY_ID: &str = concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1");

row! {
    #[derive(Debug, Clone)]
    pub struct SessionRow {
        pub id: String,
        pub created_at: i64,
        pub last_used_at: i64,
        pub idle_expires_at: i64,
        pub absolute_expires_at: i64,
        pub user_agent: String,
    }
}

row! {
    #[derive(Debug, Clone)]
    pub struct KeyRow {
        pub kid: String,
        pub private_key: Vec<u8>,
        pub public_key: Vec<u8>,
        pub created_at: i64,
        /// When it starts signing (published before: a rotation); `None` for keys stored before
        /// keys were published first (they signed from `created_at`).
        pub signs_from: Option<i64>,
        pub retired_at: Option<i64>,
        pub revoked_at: Option<i64>,
    }
}

/// The storage interface. Cheap to clone (the pools are shared).
#[derive(Clone)]
pub struct Store {
    /// Reads that may run beside the writer (SQLite: a pool of read-only connections in WAL
    /// mode; PostgreSQL: the one pool).
    read: AnyPool,
    /// Writes (SQLite: exactly one connection, which serialises every write transaction).
    write: AnyPool,
    dialect: Dialect,
    /// PostgreSQL: the URL the revocation listener connects with.
    url: String,
    /// PostgreSQL: DPoP proofs waiting for the next batched insert (`proofs`).
    proofs: Option<tokio::sync::mpsc::Sender<proofs::ProofClaim>>,
    /// A SQLite file: the read on every authenticated request answered on the calling thread
    /// (`inline.rs`), sqlx's pool when it cannot.
    inline: Option<std::sync::Arc<inline::InlineReads>>,
}

/// Connections per PostgreSQL instance (the listener takes one more).
const PG_POOL_SIZE: u32 = 16;
/// Read-only connections beside SQLite's one writer.
const SQLITE_READERS: u32 = 4;

impl Store {
    /// Opens the database `url` names (creating a SQLite file if needed, readable by its owner
    /// only) and migrates it. Anything but SQLite or PostgreSQL is refused.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        install_default_drivers();
        match DatabaseUrl::parse(url)? {
            DatabaseUrl::Sqlite(u) => Self::sqlite(&u).await,
            DatabaseUrl::Postgres(u) => Self::postgres(&u).await,
        }
    }

    async fn sqlite(url: &str) -> StoreResult<Self> {
        let memory = DatabaseUrl::Sqlite(url.to_owned()).in_memory();
        let mut inline = None;
        let (read, write) = if memory {
            // Every connection to `:memory:` is its own database: one connection for all.
            let pool = AnyPoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect(url)
                .await?;
            (pool.clone(), pool)
        } else {
            let file = sqlx::sqlite::SqliteConnectOptions::from_str(url)?
                .get_filename()
                .to_path_buf();
            private_file(&file)?;
            let write = AnyPoolOptions::new()
                .max_connections(1)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        Ok(())
                    })
                })
                .connect(&sqlite_url(&file, "rwc"))
                .await?;
            // Created after the writer switched the file to WAL, so readers run beside it.
            let read = AnyPoolOptions::new()
                .max_connections(SQLITE_READERS)
                .connect_lazy(&sqlite_url(&file, "ro"))?;
            // By its absolute path: the same file whatever the working directory is later.
            inline = std::fs::canonicalize(&file)
                .ok()
                .map(|f| std::sync::Arc::new(inline::InlineReads::new(f)));
            (read, write)
        };
        migrator(migrations::SQLITE).run(&write).await?;
        Ok(Store {
            read,
            write,
            dialect: Dialect::Sqlite,
            url: String::new(),
            proofs: None,
            inline,
        })
    }

    async fn postgres(url: &str) -> StoreResult<Self> {
        // Parsed first: a malformed URL is refused with the driver's message.
        let url = &with_verified_tls(url)?;
        let named = if url.contains("application_name=") {
            url.to_owned()
        } else {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}application_name=tokenwarden")
        };
        let pool = AnyPoolOptions::new()
            .max_connections(PG_POOL_SIZE)
            .acquire_timeout(Duration::from_secs(10))
            // Whatever the database's or the role's default: the locks the store takes (the
            // account's row before a sign-in's checks, a passkey's removal, a password's
            // change) order transactions only if each statement after the lock sees what
            // committed before it (under REPEATABLE READ, a sign-in waiting for a passkey's
            // removal still saw the passkey, and opened a session nobody would end).
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute(
                        "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED",
                    )
                    .await?;
                    Ok(())
                })
            })
            .connect(&named)
            .await
            .map_err(|e| {
                // No TLS there (sqlx's `Tls`), or a certificate refused (rustls's, as I/O).
                let tls = match &e {
                    sqlx::Error::Tls(_) => true,
                    sqlx::Error::Io(io) => io
                        .get_ref()
                        .is_some_and(|inner| inner.is::<tokio_rustls::rustls::Error>()),
                    _ => false,
                };
                if tls {
                    StoreError::Tls(e)
                } else {
                    StoreError::Database(e)
                }
            })?;
        // The setting above, as a connection of the pool sees it (a pooler in transaction mode
        // hands each transaction a connection of its own, without it).
        let level = isolation_of(&pool).await?;
        if level != "read committed" {
            return Err(StoreError::Isolation(level));
        }
        // Several instances may start at once: sqlx takes an advisory lock around migrations.
        migrator(migrations::POSTGRES).run(&pool).await?;
        let (proofs, queue) = tokio::sync::mpsc::channel(4 * proofs::BATCH);
        tokio::spawn(proofs::record(pool.clone(), queue));
        Ok(Store {
            read: pool.clone(),
            write: pool,
            dialect: Dialect::Postgres,
            url: url.to_owned(),
            proofs: Some(proofs),
            inline: None,
        })
    }

    /// The row `sql` selects by its one argument `key` from the read pool, as a `T`.
    async fn find<R, T>(&self, sql: &'static str, key: &str) -> StoreResult<Option<T>>
    where
        R: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
        T: From<R>,
    {
        let row: Option<R> = q_as!(sql, key).fetch_optional(&self.read).await?;
        Ok(row.map(T::from))
    }

    /// The isolation of the transactions a connection of the pool runs (PostgreSQL: `read
    /// committed`, which the store sets and checks at start), or `None` on SQLite, whose one
    /// writer runs them one after the other.
    pub async fn transaction_isolation(&self) -> StoreResult<Option<String>> {
        match self.dialect {
            Dialect::Postgres => Ok(Some(isolation_of(&self.write).await?)),
            Dialect::Sqlite => Ok(None),
        }
    }

    /// Whether several instances may share this database (PostgreSQL): throttle counters and
    /// DPoP `jti`s then live in it, and revocations travel as notified events.
    pub fn is_shared(&self) -> bool {
        self.dialect == Dialect::Postgres
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn backend(&self) -> &'static str {
        self.dialect.name()
    }

    pub async fn close(&self) {
        if let Some(inline) = &self.inline {
            inline.close();
        }
        self.write.close().await;
        self.read.close().await;
    }

    pub fn is_closed(&self) -> bool {
        self.write.is_closed()
    }

    /// `now`, but on a shared store no later than the database's own clock: what purges of the
    /// rows every instance relies on go by. One instance whose clock runs ahead (a step, a host
    /// that drifts) would otherwise delete them early for all: a proof's row (then replayable
    /// once at each other instance), a deny-list entry or a revoked session (a logged-out token
    /// accepted by an instance that starts), an event (missed by a feed subscriber that comes
    /// back).
    pub async fn shared_now(&self, now: i64) -> StoreResult<i64> {
        if !self.is_shared() {
            return Ok(now);
        }
        let database: i64 = q_scalar!(dialect::DATABASE_NOW_PG)
            .fetch_one(&self.read)
            .await?;
        Ok(now.min(database))
    }

    /// Frequent clean-up (every minute) of rows written per request: DPoP proofs, provider
    /// logout tokens seen and counter windows that have closed (by [`Self::shared_now`], read
    /// once), and sign-ins under way that have lapsed.
    pub async fn purge_short_lived(&self, now: i64) -> StoreResult<()> {
        let shared = self.shared_now(now).await?;
        if self.is_shared() {
            // Ten minutes past: an instance whose clock runs behind still takes a proof for as
            // long as it lags, and a row gone by the others' time let it pass there again.
            let sql = "DELETE FROM dpop_proofs WHERE until < $1";
            q!(sql, shared - PROOF_ROWS_KEPT_PAST)
                .execute(&self.write)
                .await?;
        }
        // (A window deleted early restarts its count: one instance's clock ahead would have
        // doubled every throttle's budget across the fleet.)
        self.purge_counters(shared).await?;
        self.purge_oidc(now, shared).await?;
        self.purge_ceremonies(now).await?;
        Ok(())
    }

    /// Deletes sessions (and their tokens) and deny-list entries that ended before `before`,
    /// and events a day older still (the revocation feed's subscribers start from them); and
    /// each bound session's tokens more than [`KEPT_GENERATIONS`] behind its newest.
    pub async fn purge(&self, before: i64) -> StoreResult<()> {
        for statement in [
            "DELETE FROM sessions
             WHERE absolute_expires_at < $1 OR idle_expires_at < $1 OR revoked_at < $1",
            "DELETE FROM denied_tokens WHERE expires_at < $1",
        ] {
            q!(statement, before).execute(&self.write).await?;
        }
        let sql = "DELETE FROM revocation_events WHERE at < $1";
        q!(sql, before - 86_400).execute(&self.write).await?;
        self.purge_superseded(KEPT_GENERATIONS).await
    }

    /// Deletes each DPoP-bound session's refresh tokens more than `kept` generations behind its
    /// newest. Every accepted refresh adds a row, kept until a day after the session ends: a
    /// session refreshed as often as its limit allows (30 a minute) added 43,000 a day, for up
    /// to its 30 days, and an account may open many. A token that old presented again is
    /// unknown (`invalid_grant`), no longer reuse: in a bound session it opens nothing either
    /// way (the key is the defence), and the session goes on. Not a Bearer session's, where
    /// reuse is the only one: a thief who refreshed past the user's token would otherwise see
    /// the user come back to `invalid_grant` instead of ending the thief's session. Only the
    /// sessions past `kept` generations are read, by their index.
    pub async fn purge_superseded(&self, kept: i64) -> StoreResult<()> {
        let sql = "DELETE FROM refresh_tokens
                   WHERE session_id IN (SELECT id FROM sessions
                                        WHERE dpop_jkt IS NOT NULL AND max_used_gen > $1)
                     AND generation < (SELECT s.max_used_gen FROM sessions s
                                       WHERE s.id = refresh_tokens.session_id) - $1";
        q!(sql, kept).execute(&self.write).await?;
        Ok(())
    }
}

/// What a connection of `pool` says its transactions' isolation is (PostgreSQL).
async fn isolation_of(pool: &sqlx::AnyPool) -> StoreResult<String> {
    Ok(q_scalar!("SHOW transaction_isolation")
        .fetch_one(pool)
        .await?)
}

/// sqlx's `Migrator` for one of [`migrations`]' lists, each migration as `sqlx::migrate!` makes
/// it from its file (the same checksum: databases it migrated go on; a transaction unless the
/// file starts `-- no-transaction`).
fn migrator(list: &'static [(i64, &'static str, &'static str)]) -> sqlx::migrate::Migrator {
    use sqlx::SqlSafeStr as _;
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    Migrator::with_migrations(
        list.iter()
            .map(|&(version, description, sql)| {
                let no_tx = sql.starts_with("-- no-transaction");
                let sql = sql.into_sql_str();
                Migration::new(
                    version,
                    description.into(),
                    MigrationType::Simple,
                    sql,
                    no_tx,
                )
            })
            .collect(),
    )
}

/// `sqlite:PATH?mode=MODE`, the path escaped as sqlx unescapes it (`%`, `?`, `#`). Without
/// `//`, so that no part of the path is taken for a host name (and lower-cased).
fn sqlite_url(path: &std::path::Path, mode: &str) -> String {
    let mut url = String::from("sqlite:");
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => url.push_str("%25"),
            '?' => url.push_str("%3F"),
            '#' => url.push_str("%23"),
            c => url.push(c),
        }
    }
    url.push_str("?mode=");
    url.push_str(mode);
    url
}

/// Creates the database file readable and writable by its owner only (0600), in a directory
/// created 0700, before SQLite opens it; SQLite gives its `-wal` and `-shm` files the same mode.
/// A file that exists with wider permissions is narrowed.
fn private_file(path: &std::path::Path) -> std::io::Result<()> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
        && !parent.exists()
    {
        let mut dir = std::fs::DirBuilder::new();
        dir.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
        dir.create(parent)?;
    }
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    drop(open.open(path)?);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for suffix in ["", "-wal", "-shm"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            let file = std::path::Path::new(&name);
            if let Ok(meta) = std::fs::metadata(file)
                && meta.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(file = %file.display(), "narrowing the database file's permissions to 0600");
                std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Another process (the CLI) writes a running server's SQLite file between a transaction's
    /// read and its write: the write fails with `SQLITE_BUSY_SNAPSHOT`, whatever the busy
    /// timeout. Nothing was written, so it is a 503 to retry, not a 500.
    #[tokio::test]
    async fn a_write_whose_read_another_process_made_stale_is_transient() {
        use sqlx::{AnyConnection, Connection};
        install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let mut server = AnyConnection::connect(&url).await.unwrap();
        let mut cli = AnyConnection::connect(&url).await.unwrap();
        for sql in [
            "PRAGMA journal_mode = WAL",
            "CREATE TABLE t (x INTEGER)",
            "BEGIN",
        ] {
            sqlx::query(sql).execute(&mut server).await.unwrap();
        }
        sqlx::query("SELECT count(*) FROM t")
            .fetch_one(&mut server)
            .await
            .unwrap();
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut cli)
            .await
            .unwrap();
        let e = sqlx::query("INSERT INTO t VALUES (2)")
            .execute(&mut server)
            .await
            .unwrap_err();
        let e = StoreError::Database(e);
        assert!(e.is_transient(), "{e}");
    }

    /// `build.rs`'s list is each folder as sqlx reads it (`sqlx::migrate!` did, at build time):
    /// the same versions, descriptions and checksums, so that a database an earlier version
    /// migrated starts (sqlx refuses one whose applied migration's checksum changed).
    #[tokio::test]
    async fn the_embedded_migrations_are_the_folders_as_sqlx_reads_them() {
        use sqlx::migrate::Migration;
        let fields = |m: &Migration| {
            let checksum = m.checksum.to_vec();
            (
                m.version,
                m.description.to_string(),
                checksum,
                m.no_tx,
                m.migration_type,
            )
        };
        for (list, dir) in [
            (migrations::SQLITE, "migrations"),
            (migrations::POSTGRES, "migrations-postgres"),
        ] {
            let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
            let read = sqlx::migrate::Migrator::new(folder).await.unwrap();
            let ours: Vec<_> = migrator(list).iter().map(fields).collect();
            assert_eq!(ours, read.iter().map(fields).collect::<Vec<_>>(), "{dir}");
            assert!(ours.len() > 10, "{dir}");
        }
    }

    /// An account made without a name is named by its address's local part, within the rule
    /// every name follows: it was the local part as it came (up to 254 bytes, a text-direction
    /// isolate kept).
    #[test]
    fn a_name_from_an_address_is_a_name_by_the_rule() {
        assert_eq!(name_from_address("ada@example.com"), "ada");
        let long = format!("{}@example.com", "a".repeat(120));
        assert_eq!(name_from_address(&long), "a".repeat(100));
        assert_eq!(name_from_address("ann\u{2066}x@example.com"), "user");
        for name in ["ada", &"a".repeat(100), "user"] {
            assert!(valid_name(name));
        }
    }

    #[test]
    fn urls_select_a_backend_and_anything_else_is_refused() {
        assert_eq!(
            DatabaseUrl::parse("postgres://u:p@127.0.0.1:5432/tw").unwrap(),
            DatabaseUrl::Postgres("postgres://u:p@127.0.0.1:5432/tw".into())
        );
        assert!(matches!(
            DatabaseUrl::parse("postgresql://h/db").unwrap(),
            DatabaseUrl::Postgres(_)
        ));
        assert_eq!(
            DatabaseUrl::parse("sqlite::memory:").unwrap(),
            DatabaseUrl::Sqlite("sqlite::memory:".into())
        );
        assert_eq!(
            DatabaseUrl::parse("data/tw.db").unwrap(),
            DatabaseUrl::Sqlite("sqlite://data/tw.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("/var/lib/tw.db").unwrap(),
            DatabaseUrl::Sqlite("sqlite:///var/lib/tw.db".into())
        );
        for bad in [
            "mysql://u@h/db",
            "postgre://h/db",
            "pg://h/db",
            "https://example.com/db",
            "",
            "  ",
        ] {
            assert!(
                matches!(DatabaseUrl::parse(bad), Err(StoreError::UnsupportedUrl(_))),
                "{bad:?}"
            );
        }
        match DatabaseUrl::parse("mysql://tw:hunter2@db/tw") {
            Err(e) => {
                let text = e.to_string();
                assert!(text.contains("mysql://tw:…@db/tw"), "{text}");
                assert!(!text.contains("hunter2"), "{text}");
            }
            Ok(u) => panic!("accepted {u:?}"),
        }
        assert!(DatabaseUrl::parse("sqlite::memory:").unwrap().in_memory());
        assert!(!DatabaseUrl::parse("postgres://h/db").unwrap().in_memory());
    }

    /// A libpq keyword string became a SQLite file named after it, password and all; a JDBC
    /// URL's password (its query) was printed in the refusal.
    #[test]
    fn no_password_is_taken_for_a_file_name_or_printed() {
        for (url, shown) in [
            ("host=db.internal user=tw password=secret-pw dbname=tw", "…"),
            (
                "jdbc:postgresql://db/tw?user=tw&password=secret-pw",
                "jdbc:postgresql://db/tw?…",
            ),
        ] {
            match DatabaseUrl::parse(url) {
                Err(StoreError::UnsupportedUrl(u)) => assert_eq!(u, shown),
                other => panic!("{url}: {other:?}"),
            }
        }
        for (url, shown) in [
            (
                "postgres://tw:secret-pw@db/tw?sslpassword=x",
                "postgres://tw:…@db/tw?…",
            ),
            // A password with `?` or `/` in it, a scheme without `//`.
            ("mysql://tw:secret?pw@db/tw", "mysql://tw:…@db/tw"),
            ("mysql://tw:secret/pw@db/tw", "mysql://tw:…@db/tw"),
            ("postgresql:tw:secret-pw@db/tw", "…@db/tw"),
            // An `@` in the query, or in a keyword string (Azure's `user=login@server`).
            (
                "jdbc:postgresql://x:5432/db?user=me@srv&password=secret-pw",
                "jdbc:postgresql://…",
            ),
            (
                "postgres://db/tw?password=secret-pw&x=a@b",
                "postgres://…@b",
            ),
            ("host=x user=me@srv password=secret-pw sslmode=require", "…"),
            ("sqlite://data/tw.db?mode=rwc", "sqlite://data/tw.db?…"),
        ] {
            assert_eq!(redact(url), shown, "{url}");
        }
    }

    /// Off this machine, PostgreSQL over TLS with its certificate verified unless the URL says
    /// otherwise; on it (loopback, a Unix socket), the driver's default.
    #[test]
    fn a_postgres_host_off_this_machine_is_reached_over_verified_tls() {
        // Whatever this machine's PGSSLMODE: none here, then one.
        let verified = |u: &str| {
            verified_tls(u, None)
                .unwrap()
                .ends_with("sslmode=verify-full")
        };
        for remote in [
            "postgres://tw:pw@db.internal/tw",
            "postgres://tw:pw@10.0.0.5:5432/tw?application_name=x",
            "postgresql://tw@[2001:db8::1]/tw",
            "postgres://tw@localhost.example.com/tw",
        ] {
            assert!(verified(remote), "{remote}");
        }
        for kept in [
            "postgres://tw:pw@127.0.0.1:5432/tw",
            "postgres://tw:pw@localhost/tw",
            "postgres://tw@[::1]/tw",
            "postgres://tw@%2Fvar%2Frun%2Fpostgresql/tw",
            "postgres://tw@db.internal/tw?sslmode=disable",
            "postgres://tw@db.internal/tw?ssl-mode=require",
        ] {
            assert_eq!(verified_tls(kept, None).unwrap(), kept);
        }
        // PGSSLMODE that names an sslmode is the operator's choice; one that names none is
        // refused, as libpq refuses it.
        let remote = "postgres://tw:pw@db.internal/tw";
        assert_eq!(
            verified_tls(remote, Some("require".into())).unwrap(),
            remote
        );
        assert!(matches!(
            verified_tls(remote, Some("verify_full".into())),
            Err(StoreError::SslMode(_))
        ));
    }

    /// The store on an in-memory SQLite database, for the statement tests of each file.
    pub(super) async fn memory() -> Store {
        Store::connect("sqlite::memory:").await.unwrap()
    }

    /// The user `u1` (ada@example.com, no password), created at 1,000.
    pub(super) async fn ada(s: &Store) {
        let u = NewUser {
            id: "u1",
            email: "ada@example.com",
            roles: &[],
            name: "Ada",
            password_hash: "",
            email_verified_at: None,
            password_unproved: false,
            claims: "{}",
            now: 1_000,
        };
        assert!(s.create_user(&u).await.unwrap());
    }

    /// A session `id` of [`ada`] opened at `now` (its first token's hash: `id`).
    pub(super) fn ada_session(id: &str, now: i64) -> NewSession<'_> {
        NewSession {
            id,
            user_id: "u1",
            token_hash: id,
            user_agent: "",
            now,
            idle_expires_at: 9_000,
            absolute_expires_at: 9_000,
            dpop_jkt: None,
            amr: "pwd",
            auth_time: now,
            password_version: None,
            federated: None,
            passkey: None,
        }
    }
}
