//! SQLite point reads answered on the calling thread.
//!
//! sqlx runs every SQLite connection on a thread of its own: each query is a message to that
//! thread and a wake-up back, two context switches that cost `GET /api/me` about 95 µs of CPU
//! on two cores (its read itself takes a few). The read on every authenticated request (the
//! user's row) is therefore answered here, by a read-only connection of our own in WAL mode,
//! on the task's thread: a reader never waits for the writer in WAL mode, and this one never
//! waits at all (no busy timeout). Anything but a clean answer (the file cannot be opened, a
//! lock, any error) is no answer: the caller asks through sqlx, as before, and gets its errors.
//! The statement is the one the pool runs ([`super::USER_BY_ID`]), read into the same row type.

use std::path::PathBuf;
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::UserRow;

/// Connections kept for reuse; more may be open at a moment of many readers, and those are
/// closed when done.
const KEPT: usize = 4;

pub struct InlineReads {
    file: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl InlineReads {
    pub fn new(file: PathBuf) -> Self {
        InlineReads {
            file,
            idle: Mutex::new(Vec::new()),
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

    /// `read` on an idle connection (or a new one); a connection that failed is dropped.
    fn with<T>(&self, read: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Option<T> {
        let idle = self.idle.lock().ok()?.pop();
        let conn = match idle {
            Some(c) => c,
            None => self.open().ok()?,
        };
        let answer = read(&conn).ok()?;
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < KEPT
        {
            idle.push(conn);
        }
        Some(answer)
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.file,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // rusqlite waits up to 5 s on a lock by default: never here, on an async thread.
        conn.busy_timeout(std::time::Duration::ZERO)?;
        Ok(conn)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

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

    /// The inline reader's answer, as the store hands it out.
    fn inline_user(store: &Store, id: &str) -> Option<Option<User>> {
        let inline = store
            .inline
            .as_ref()
            .expect("a SQLite file has an inline reader");
        inline.user_row(USER_BY_ID, id).map(|r| r.map(User::from))
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
            assert_eq!(inline_user(&store, id), Some(pooled.clone()), "{id}");
            assert_eq!(store.user_by_id(id).await.unwrap(), pooled, "{id}");
        }
        let ada = inline_user(&store, "u1").flatten().unwrap();
        assert_eq!(ada.roles, ["admin", "staff"]);
        assert!(ada.email_verified);
        assert_eq!(ada.phone.as_deref(), Some("+44 20 7946 0000"));
        assert_eq!(ada.claims.get("tenant"), Some(&serde_json::json!("t1")));
        // A change by the writer is read at once (no cache).
        store
            .update_profile("u1", Some("Ada L."), None)
            .await
            .unwrap();
        assert_eq!(inline_user(&store, "u1").flatten().unwrap().name, "Ada L.");
    }

    #[tokio::test]
    async fn a_locked_database_is_no_inline_answer_and_never_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let store = file_store(&dir).await;
        add(&store, "u1", "ada@example.com", None, "{}").await;
        // Another process holds the file in exclusive locking mode (a `sqlite3` shell, a
        // backup tool), which shuts out every reader. (It can take that lock once this
        // process's other connections are closed: the pools', and the idle inline ones.)
        store.close().await;
        store.inline.as_ref().unwrap().idle.lock().unwrap().clear();
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
        assert_eq!(inline_user(&store, "u1").flatten().unwrap().id, "u1");
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
