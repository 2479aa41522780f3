//! SQLite point reads answered on the calling thread.
//!
//! sqlx runs every SQLite connection on a thread of its own: each query is a message to that
//! thread and a wake-up back, two context switches that cost `GET /api/me` about 95 µs of CPU
//! on two cores (its read itself takes a few). The read on every authenticated request (the
//! user's row) is therefore answered here, by a read-only connection of our own in WAL mode,
//! on the task's thread. A WAL reader does not wait for the writer, and this one has no busy
//! timeout; but SQLite's WAL read path retries by itself while the WAL index is being
//! rewritten (up to seconds, when another process stops in the middle of a commit), and a cold
//! page cache reads the disk. So a read that fails, or takes more than [`SLOW`] and waited
//! meanwhile (the thread blocked: on the disk, SQLite's own sleep, a lock), turns this path off
//! for [`PAUSE`]: a stall costs one request's thread once, not every request's. A read that was
//! only descheduled for as long (two cores under load) waited on nothing: before, each such read
//! turned the path off, and a benchmark's throughput swung by half from run to run. Anything
//! but a clean answer is no answer: the caller asks through sqlx, as before, and gets its
//! errors. The statement is the one the pool runs ([`super::USER_BY_ID`]), read into the same
//! row type. Connections are reopened after [`MAX_AGE`] (a file restored under the server is
//! read within that), and all of them closed with the store.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::UserRow;

/// A read slower than this that waited turns the path off for [`PAUSE`].
const SLOW: Duration = Duration::from_millis(10);
/// How long the path stays off after a failed or slow read.
const PAUSE: Duration = Duration::from_secs(10);
/// How long a connection is used before it is closed and another opened.
const MAX_AGE: Duration = Duration::from_secs(60);

/// How many times the calling thread has waited (blocked voluntarily: on the disk, a sleep, a
/// lock) so far; `None` where that is not counted per thread (other systems than Linux).
fn waits_so_far() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: `getrusage` writes a whole `rusage` where it is pointed, and the zeroed value
        // is one already.
        let (rc, usage) = unsafe {
            let rc = libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr());
            (rc, usage.assume_init())
        };
        (rc == 0).then(|| u64::try_from(usage.ru_nvcsw).unwrap_or(0))
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

pub struct InlineReads {
    file: PathBuf,
    /// Idle connections, with when each was opened; at most `kept`.
    idle: Mutex<Vec<(Connection, Instant)>>,
    kept: usize,
    /// When this was made: the instants below are milliseconds since.
    epoch: Instant,
    /// Off until then (a failed or slow read).
    off_until_ms: AtomicU64,
    /// The store was closed: off for good.
    closed: AtomicBool,
}

impl InlineReads {
    pub fn new(file: PathBuf) -> Self {
        InlineReads {
            file,
            idle: Mutex::new(Vec::new()),
            // One per thread that may read at once (the runtime's workers), and a few more.
            kept: std::thread::available_parallelism().map_or(4, |n| n.get().max(4)),
            epoch: Instant::now(),
            off_until_ms: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        }
    }

    /// The row `sql` selects by `key` (`$1`), or `None` when this path cannot answer.
    pub(super) fn user_row(&self, sql: &str, key: &str) -> Option<Option<UserRow>> {
        self.with(|c| {
            c.prepare_cached(sql)?
                .query_row([key], |r| {
                    Ok(UserRow {
                        id: r.get("id")?,
                        email: r.get("email")?,
                        name: r.get("name")?,
                        phone: r.get("phone")?,
                        roles: r.get("roles")?,
                        email_verified_at: r.get("email_verified_at")?,
                        claims: r.get("claims")?,
                    })
                })
                .optional()
        })
    }

    /// Closes the idle connections, and takes no more reads.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// `read` on an idle connection (or a new one); a connection that failed is dropped.
    fn with<T>(&self, read: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Option<T> {
        let started = Instant::now();
        let waits = waits_so_far();
        if self.closed.load(Ordering::Relaxed)
            || self.ms(started) < self.off_until_ms.load(Ordering::Relaxed)
        {
            return None;
        }
        let idle = self.idle.lock().ok()?.pop();
        let answer = match idle.filter(|(_, opened)| opened.elapsed() < MAX_AGE) {
            Some(c) => Ok(c),
            None => self.open().map(|c| (c, Instant::now())),
        }
        .and_then(|(conn, opened)| read(&conn).map(|answer| (answer, conn, opened)));
        let done = Instant::now();
        let took = done.duration_since(started);
        // Slow and waited; or slow where waits are not counted.
        let waited = || match (waits, waits_so_far()) {
            (Some(before), Some(after)) => after > before,
            _ => true,
        };
        if answer.is_err() || (took > SLOW && waited()) {
            let until = self.ms(done + PAUSE);
            self.off_until_ms.store(until, Ordering::Relaxed);
            match &answer {
                Err(e) => {
                    tracing::warn!(error = %e, "an inline SQLite read failed: reading through the pool for 10 s")
                }
                Ok(_) => tracing::debug!(
                    took_ms = took.as_millis(),
                    "a slow inline SQLite read: reading through the pool for 10 s"
                ),
            }
        }
        let (answer, conn, opened) = answer.ok()?;
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.kept
            && !self.closed.load(Ordering::Relaxed)
        {
            idle.push((conn, opened));
        }
        Some(answer)
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.file,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_PRIVATE_CACHE,
        )?;
        // rusqlite waits up to 5 s on a lock by default: never here, on an async thread.
        conn.busy_timeout(Duration::ZERO)?;
        Ok(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{NewUser, Store, USER_BY_ID, User, UserRow};
    use super::*;

    async fn file_store(dir: &tempfile::TempDir) -> Store {
        let url = format!("sqlite://{}", dir.path().join("tw.db").display());
        Store::connect(&url).await.unwrap()
    }

    async fn add(store: &Store, id: &str, email: &str, verified: Option<i64>, claims: &str) {
        let roles = ["admin".to_owned(), "staff".to_owned()];
        let u = NewUser {
            id,
            email,
            roles: &roles,
            name: "Ada",
            password_hash: "",
            email_verified_at: verified,
            password_unproved: false,
            claims,
            now: 1_000,
        };
        assert!(store.create_user(&u).await.unwrap());
    }

    fn reader(store: &Store) -> &InlineReads {
        store
            .inline
            .as_deref()
            .expect("a SQLite file has an inline reader")
    }

    /// The inline reader's answer, as the store hands it out, with any pause a read before
    /// left lifted (a test thread descheduled for 10 ms on a loaded machine would leave one).
    fn inline_user(store: &Store, id: &str) -> Option<Option<User>> {
        reader(store).off_until_ms.store(0, Ordering::Relaxed);
        reader(store)
            .user_row(USER_BY_ID, id)
            .map(|r| r.map(User::from))
    }

    #[tokio::test]
    async fn the_inline_read_answers_what_the_pool_answers() {
        let dir = tempfile::tempdir().unwrap();
        let store = file_store(&dir).await;
        add(
            &store,
            "u1",
            "ada@example.com",
            Some(5),
            r#"{"tenant":"t1"}"#,
        )
        .await;
        add(&store, "u2", "bob@example.com", None, "{}").await;
        store
            .update_profile("u1", None, Some(Some("+44 20 7946 0000")))
            .await
            .unwrap();
        for id in ["u1", "u2", "nobody"] {
            let pooled = store.find::<UserRow, User>(USER_BY_ID, id).await.unwrap();
            assert_eq!(inline_user(&store, id), Some(pooled), "{id}");
        }
        let ada = inline_user(&store, "u1").flatten().unwrap();
        assert_eq!(ada.roles, ["admin", "staff"]);
        assert!(ada.email_verified);
        assert_eq!(ada.phone.as_deref(), Some("+44 20 7946 0000"));
        assert_eq!(ada.claims.get("tenant"), Some(&serde_json::json!("t1")));
        // A change by the writer is read at once (no cache, no snapshot kept between reads).
        store
            .update_profile("u1", Some("Ada L."), None)
            .await
            .unwrap();
        assert_eq!(inline_user(&store, "u1").flatten().unwrap().name, "Ada L.");
        assert!(
            store
                .delete_user_by_email("ada@example.com", 2_000)
                .await
                .unwrap()
        );
        assert_eq!(inline_user(&store, "u1"), Some(None));
    }

    #[tokio::test]
    async fn a_locked_database_is_no_inline_answer_and_never_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let store = file_store(&dir).await;
        add(&store, "u1", "ada@example.com", None, "{}").await;
        // Another connection holds the file in exclusive locking mode (a `sqlite3` shell, a
        // backup tool), which shuts out every reader. (It can take that lock once this
        // store's other connections are closed: the pools', and the idle inline ones.)
        store.read.close().await;
        store.write.close().await;
        reader(&store).idle.lock().unwrap().clear();
        let holder = Connection::open(dir.path().join("tw.db")).unwrap();
        holder
            .execute_batch("PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE;")
            .unwrap();
        let started = Instant::now();
        assert_eq!(inline_user(&store, "u1"), None);
        // Never waited on the lock (rusqlite's default is to wait up to 5 s, on this thread).
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
        drop(holder);
        // The failure turned the path off for a while: the next read goes to the pool, without
        // trying the file again.
        assert_eq!(reader(&store).user_row(USER_BY_ID, "u1").map(|_| ()), None);
        assert!(reader(&store).idle.lock().unwrap().is_empty());
        // And back once the pause is over.
        assert_eq!(inline_user(&store, "u1").flatten().unwrap().id, "u1");
    }

    #[tokio::test]
    async fn a_slow_read_turns_the_inline_path_off_for_a_while() {
        let dir = tempfile::tempdir().unwrap();
        let store = file_store(&dir).await;
        add(&store, "u1", "ada@example.com", None, "{}").await;
        let slow = reader(&store).with(|_| {
            std::thread::sleep(SLOW + Duration::from_millis(5));
            Ok("answered")
        });
        assert_eq!(slow, Some("answered"), "a slow answer is still an answer");
        let off = reader(&store).off_until_ms.load(Ordering::Relaxed);
        let now = reader(&store).ms(Instant::now());
        assert!(off > now + PAUSE.as_millis() as u64 - 1_000, "{off} {now}");
        assert_eq!(reader(&store).user_row(USER_BY_ID, "u1").map(|_| ()), None);
        // The store still answers, through its pool.
        assert_eq!(store.user_by_id("u1").await.unwrap().unwrap().id, "u1");
    }

    /// Slow without waiting on anything (the thread busy, or descheduled, as on two cores
    /// under load): still an answer, and the path stays on.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_read_slow_only_for_the_cpu_leaves_the_inline_path_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = file_store(&dir).await;
        add(&store, "u1", "ada@example.com", None, "{}").await;
        // Open the connection first (opening a file waits on the disk).
        assert!(inline_user(&store, "u1").flatten().is_some());
        let busy = reader(&store).with(|_| {
            let until = Instant::now() + SLOW + Duration::from_millis(5);
            let mut spins = 0u64;
            while Instant::now() < until {
                spins = std::hint::black_box(spins + 1);
            }
            Ok(spins)
        });
        assert!(busy.is_some());
        assert_eq!(reader(&store).off_until_ms.load(Ordering::Relaxed), 0);
        let row = reader(&store).user_row(USER_BY_ID, "u1").flatten();
        assert_eq!(row.map(|r| User::from(r).id).as_deref(), Some("u1"));
    }

    #[tokio::test]
    async fn connections_are_reopened_after_their_age_and_closed_with_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = file_store(&dir).await;
        add(&store, "u1", "ada@example.com", None, "{}").await;
        assert!(inline_user(&store, "u1").flatten().is_some());
        let opened = |store: &Store| reader(store).idle.lock().unwrap()[0].1;
        let first = opened(&store);
        assert!(inline_user(&store, "u1").flatten().is_some());
        assert_eq!(opened(&store), first, "an idle connection is reused");
        // One past its age is closed, and another opened.
        reader(&store).idle.lock().unwrap()[0].1 = first - MAX_AGE;
        assert!(inline_user(&store, "u1").flatten().is_some());
        assert_eq!(reader(&store).idle.lock().unwrap().len(), 1);
        assert!(opened(&store) >= first, "a new connection");
        store.close().await;
        assert!(reader(&store).idle.lock().unwrap().is_empty());
        assert_eq!(inline_user(&store, "u1"), None, "closed with the store");
    }

    #[tokio::test]
    async fn a_file_the_inline_reader_cannot_open_leaves_the_read_to_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = file_store(&dir).await;
        add(&store, "u1", "ada@example.com", None, "{}").await;
        store.inline = Some(std::sync::Arc::new(InlineReads::new(
            dir.path().join("gone/tw.db"),
        )));
        assert_eq!(inline_user(&store, "u1"), None);
        assert_eq!(
            store.user_by_id("u1").await.unwrap().unwrap().email,
            "ada@example.com"
        );
    }

    #[tokio::test]
    async fn an_in_memory_database_has_no_inline_reader() {
        assert!(super::super::tests::memory().await.inline.is_none());
    }
}
