//! PostgreSQL for the tests: a throwaway cluster (scripts/pg.sh) and a fresh database per
//! server.
//!
//! The cluster is `TW_TEST_PG_URL` when set (`scripts/pg.sh run cargo test …`), otherwise one
//! started for this test process on first use, in a temporary directory on a loopback port,
//! as the `postgres` user; a watcher (`pg.sh reap`) stops and deletes it when the process
//! exits, however it exits.

use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::Connection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// `TW_TEST_BACKEND`: `postgres` or (default) `sqlite`. Anything else is a mistake, not SQLite.
pub fn backend() -> Backend {
    match std::env::var("TW_TEST_BACKEND").as_deref() {
        Ok("postgres") => Backend::Postgres,
        Ok("sqlite") | Ok("") | Err(_) => Backend::Sqlite,
        Ok(other) => panic!("TW_TEST_BACKEND={other:?}: use sqlite or postgres"),
    }
}

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/pg.sh");

/// The URL of the cluster's `postgres` database.
pub fn cluster_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("TW_TEST_PG_URL")
            && !url.is_empty()
        {
            return url;
        }
        let mut last_error = String::new();
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("tw-pg.")
                .tempdir()
                .expect("temp dir")
                .keep();
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let out = Command::new(SCRIPT)
                .args(["start", &dir.display().to_string(), &port.to_string()])
                .output()
                .expect("run scripts/pg.sh");
            // Whatever happened, the directory goes when this process does: the reaper outlives
            // us on purpose, so it is never waited for.
            #[allow(clippy::zombie_processes)]
            Command::new(SCRIPT)
                .args([
                    "reap",
                    &std::process::id().to_string(),
                    &dir.display().to_string(),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start the cluster's reaper");
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).trim().to_owned();
            }
            last_error = String::from_utf8_lossy(&out.stderr).into_owned();
        }
        panic!("could not start PostgreSQL: {last_error}");
    })
}

/// A new, empty database in the cluster; its URL.
pub async fn fresh_database() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let admin = cluster_url();
    let name = format!(
        "tw_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        rand::random::<u32>()
    );
    let mut conn = sqlx::PgConnection::connect(admin)
        .await
        .expect("connect to the test cluster");
    // `name` is ours: digits and underscores.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create a test database");
    let _ = conn.close().await;
    let (base, _) = admin.rsplit_once('/').expect("a database in the URL");
    format!("{base}/{name}")
}
