//! The server as its users run it: a database file, restarts, the `keys` CLI, `--demo`. Every
//! request goes over a socket, to a server in this process or to the binary.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;

fn db_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}/tw.db", dir.path().display())
}

#[tokio::test]
async fn sessions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = db_url(&dir);
    let s = TestServer::on(&url, |_| {}).await;
    let t = Client::new(&s).sign_in(ALICE).await;
    s.stop().await;

    let s = TestServer::on(&url, |_| {}).await;
    let mut c = Client::new(&s);
    assert_eq!(
        c.me(&t.access).await.status,
        200,
        "same signing key after restart"
    );
    let t1 = c.rotate(&t.refresh).await;
    assert_eq!(c.me(&t1.access).await.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn a_logout_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = db_url(&dir);
    let s = TestServer::on(&url, |_| {}).await;
    let mut c = Client::new(&s);
    let t = c.sign_in(ALICE).await;
    // With the token alone: the deny-list is what has to survive.
    c.refresh = None;
    assert_eq!(c.logout().await.status, 204);
    s.stop().await;
    let s = TestServer::on(&url, |_| {}).await;
    let res = Client::new(&s).me(&t.access).await;
    assert_eq!(res.status, 401, "deny-list reloaded");
    s.stop().await;
}

/// The CLI on the database at `url` with the key-encryption key `kek`, as it ended.
fn cli_with(url: &str, kek: &str, args: &[&str]) -> std::process::Output {
    Command::new(server_binary())
        .args(args)
        .env("TW_DATABASE_URL", url)
        .env("TW_KEY_ENCRYPTION_KEY", kek)
        .env("RUST_LOG", "warn")
        .finished()
}

/// The CLI with the tests' key-encryption key, which must succeed: what it printed.
fn cli(url: &str, args: &[&str]) -> String {
    let out = cli_with(url, TEST_KEK, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `users` and `keys` change the servers' database: one in memory is refused (it kept
/// nothing), and one the command creates (a path mistyped, or relative to another directory)
/// is said, not only "imported 1 users".
#[test]
fn a_command_on_a_database_in_memory_is_refused_and_one_it_creates_is_said() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.jsonl");
    std::fs::write(&file, "{\"email\":\"ada@example.com\",\"name\":\"Ada\"}\n").unwrap();
    let import = |url: &str| {
        Command::new(server_binary())
            .args(["users", "import", &file.display().to_string()])
            .env("TW_DATABASE_URL", url)
            .env("TW_KEY_ENCRYPTION_KEY", TEST_KEK)
            .env("RUST_LOG", "warn")
            .finished()
    };
    let out = import("sqlite::memory:");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in memory keeps nothing"), "{err}");
    // A dry run keeps nothing anyway: it checks the file.
    let out = Command::new(server_binary())
        .args(["users", "import", &file.display().to_string(), "--dry-run"])
        .env("TW_DATABASE_URL", "sqlite::memory:")
        .env("TW_KEY_ENCRYPTION_KEY", TEST_KEK)
        .finished();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("would import 1 users"));
    let url = db_url(&dir);
    for (time, note) in [("first", true), ("second", false)] {
        let out = import(&url);
        assert!(out.status.success(), "{time}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            err.contains("did not exist and was created"),
            note,
            "{time}: {err}"
        );
    }
}

/// A command refused for want of a key-encryption key leaves nothing behind: it created the
/// database file first, empty, which a server started later on the same path then took for
/// its own.
#[test]
fn a_command_without_a_key_encryption_key_creates_no_database() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data").join("tw.db");
    let url = format!("sqlite://{}", file.display());
    for args in [&["keys", "list"][..], &["keys", "rotate"][..]] {
        let out = Command::new(server_binary())
            .args(args)
            .env("TW_DATABASE_URL", &url)
            .env_remove("TW_KEY_ENCRYPTION_KEY")
            .env_remove("TW_KEY_ENCRYPTION_KEY_FILE")
            .env("RUST_LOG", "warn")
            .finished();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("TW_KEY_ENCRYPTION_KEY"), "{args:?}: {err}");
        assert!(!file.exists(), "{args:?} created {}", file.display());
    }
}

/// `keys list` only reads: on a database without a key it made one, sealed by whatever
/// key-encryption key it was given (a wrong one left a ring no server could open).
#[test]
fn keys_list_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = db_url(&dir);
    for _ in 0..2 {
        let listed = cli(&url, &["keys", "list"]);
        assert_eq!(listed.lines().count(), 1, "the header alone: {listed}");
    }
}

#[tokio::test]
async fn the_keys_cli_reaches_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let url = db_url(&dir);
    let s = TestServer::on(&url, |c| c.key_poll_secs = 1).await;
    let _poller = tokenwarden_server::spawn_maintenance(s.state.clone());
    let mut c = Client::new(&s);
    let t = c.sign_in(ALICE).await;
    let kid = jwt_parts(&t.access).0["kid"].as_str().unwrap().to_owned();
    assert!(cli(&url, &["keys", "list"]).contains(&format!("{kid:<44} signing")));

    // Graceful: the old token keeps working; new tokens carry the new kid.
    // Published first, signing after --key-publish-secs (here 0: no verifier caches the JWKS).
    let out = cli(
        &url,
        &[
            "--key-publish-secs",
            "0",
            "--jwks-max-age-secs",
            "0",
            "keys",
            "rotate",
        ],
    );
    assert!(out.starts_with("new key "), "{out}");
    assert!(out.contains("signs in 0 s"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut t = t;
    loop {
        assert_eq!(c.me(&t.access).await.status, 200);
        t = c.rotate(&t.refresh).await;
        if jwt_parts(&t.access).0["kid"] != kid.as_str() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server never picked up the new key"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let new_kid = jwt_parts(&t.access).0["kid"].as_str().unwrap().to_owned();

    // Emergency: the current key's tokens are refused within the poll interval.
    cli(&url, &["keys", "revoke", &new_kid]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.me(&t.access).await.status == 200 {
        assert!(
            Instant::now() < deadline,
            "revocation never reached the server"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let t2 = c.rotate(&t.refresh).await;
    assert_eq!(
        c.me(&t2.access).await.status,
        200,
        "refresh recovers, nobody logged out"
    );
    s.stop().await;
}

#[test]
fn a_kid_starting_with_a_hyphen_is_a_kid_not_an_option() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(server_binary())
        .args(["keys", "revoke", "-UFESxKKOT57uH09yl5mQUbeXF9"])
        .env("TW_DATABASE_URL", db_url(&dir))
        .env("TW_KEY_ENCRYPTION_KEY", TEST_KEK)
        .finished();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no live key with kid -UFESxKKOT57uH09yl5mQUbeXF9"),
        "{stderr}"
    );
}

/// `keys rotate` and `keys revoke` whose change is committed but whose re-read of the ring after
/// it fails (here a key that does not open, planted by a trigger) succeed and say so: exiting 1
/// would have an operator run them again, rotating twice, or revoking a kid that is no longer
/// live.
#[tokio::test]
async fn a_keys_change_committed_succeeds_when_the_re_read_after_it_fails() {
    let kid_of = |out: &str| {
        let kid = out.split_whitespace().nth(2).unwrap();
        kid.trim_end_matches(',').to_owned()
    };
    let said = |out: std::process::Output| {
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        assert!(
            err.contains("is committed, but re-reading the key ring after it failed"),
            "{err}"
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // A database with a ring, and a trigger that makes every live key unreadable on `event`.
    let planted = async |event: &str| {
        let dir = tempfile::tempdir().unwrap();
        let url = db_url(&dir);
        let first = kid_of(&cli(&url, &["keys", "rotate"]));
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let trigger = format!(
            "CREATE TRIGGER unreadable AFTER {event} ON signing_keys BEGIN \
             UPDATE signing_keys SET private_key = X'00' WHERE revoked_at IS NULL; END"
        );
        let trigger = sqlx::AssertSqlSafe(trigger);
        sqlx::query(trigger).execute(&pool).await.unwrap();
        pool.close().await;
        (dir, url, first)
    };

    let (_dir, url, _) = planted("INSERT").await;
    let out = said(cli_with(&url, TEST_KEK, &["keys", "rotate"]));
    assert!(out.starts_with("new key "), "{out}");
    assert!(
        cli(&url, &["keys", "list"]).contains(&kid_of(&out)),
        "committed"
    );

    let (_dir, url, first) = planted("UPDATE OF revoked_at").await;
    let out = said(cli_with(&url, TEST_KEK, &["keys", "revoke", &first]));
    assert!(out.starts_with(&format!("revoked {first}")), "{out}");
    let listed = cli(&url, &["keys", "list"]);
    assert!(listed.contains(&format!("{first:<44} revoked")), "{listed}");
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish() {
    let s = TestServer::start().await;
    let mut c = Client::new(&s);
    c.sign_in(ALICE).await;
    s.refresh_latency_ms.store(400, Ordering::SeqCst);
    let before = s.counts.refresh_calls.load(Ordering::SeqCst);
    let pending = tokio::spawn(async move { c.try_refresh().await });
    // Stopped once the refresh is in the server's hands (not after a guessed sleep).
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.counts.refresh_calls.load(Ordering::SeqCst) == before {
        assert!(
            Instant::now() < deadline,
            "the refresh never reached the server"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    s.stop().await;
    let res = pending.await.unwrap().expect("response despite shutdown");
    assert_eq!(res.status, 200);
}

#[test]
fn a_wildcard_cors_origin_is_refused() {
    let out = Command::new(server_binary())
        .args([
            "--bind",
            "127.0.0.1:0",
            "--allowed-origin",
            "*",
            "--database-url",
            "sqlite::memory:",
        ])
        .finished();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("explicit http(s) origin"));
}

/// `--demo` with a sign that it runs behind a proxy is refused: its mailbox, which shows every
/// emailed code, cannot tell a proxy on this machine from a person on it.
#[test]
fn a_demo_behind_a_proxy_is_refused() {
    for proxied in [
        ["--trusted-proxy", "127.0.0.1/32"],
        ["--public-origin", "https://auth.example.com"],
    ] {
        let out = Command::new(server_binary())
            .args([
                "--bind",
                "127.0.0.1:0",
                "--demo",
                "--database-url",
                "sqlite::memory:",
            ])
            .args(proxied)
            .finished();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--demo behind a proxy"), "{err}");
    }
}

/// A new key-encryption key (the old one leaked): `keys reseal` seals every signing key and
/// sealed secret again under it, in one go; servers then start with the new key only, and their
/// sessions go on. With a current key that does not open them, it changes nothing.
#[tokio::test]
async fn keys_reseal_moves_every_sealed_key_to_a_new_key_encryption_key() {
    use tokenwarden_server::kek::{KeyEncryption, LocalKek};
    let dir = tempfile::tempdir().unwrap();
    let url = db_url(&dir);
    let s = TestServer::on(&url, |_| {}).await;
    let mut c = Client::new(&s);
    let t = c.sign_in(ALICE).await;
    s.stop().await;
    const NEW: &str = "TlROTlROTlROTlROTlROTlROTlROTlROTlROTlROTlI=";
    let new_file = dir.path().join("new.kek");
    std::fs::write(&new_file, format!("{NEW}\n")).unwrap();
    let new_file = new_file.display().to_string();
    let reseal = |current: &str| {
        let args = ["keys", "reseal", "--new-key-encryption-key-file", &new_file];
        cli_with(&url, current, &args)
    };
    // A current key that opens nothing: refused, nothing changed.
    let wrong = reseal("V1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1c=");
    assert!(!wrong.status.success());
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(err.contains("does not open"), "{err}");
    // The right one (every key still opens with it: the refusal changed nothing): every key
    // and secret (the known browsers' key at least) sealed again.
    let out = reseal(TEST_KEK);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("1 signing keys"), "{said}");
    assert!(!said.contains(" 0 secrets"), "{said}");
    // The old key opens nothing now; the new one does, and the session goes on.
    assert!(
        !cli_with(&url, TEST_KEK, &["keys", "rotate"])
            .status
            .success()
    );
    let new = KeyEncryption::local(LocalKek::parse(NEW).unwrap());
    let s = TestServer::on(&url, move |c| c.key_encryption = new).await;
    let mut again = Client::new(&s).holding(&t);
    let t2 = again.rotate(&t.refresh).await;
    assert_eq!(again.me(&t2.access).await.status, 200);
    s.stop().await;
}

/// A passkey page on plain http beyond this machine, as an allowed origin: refused at start.
#[test]
fn a_webauthn_origin_on_plain_http_beyond_this_machine_is_refused() {
    let stderr = refused(
        &[
            "--bind",
            "127.0.0.1:0",
            "--database-url",
            "sqlite::memory:",
            "--webauthn-rp-id",
            "example.com",
            "--webauthn-origin",
            "http://app.example.com",
        ],
        &[],
    );
    assert!(stderr.contains("is plain http"), "{stderr}");
}

/// `users add` takes no password as a flag: its value would be in `ps` and the shell's history
/// (TW_PASSWORD, or typed at the prompt).
#[test]
fn users_add_takes_no_password_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(server_binary())
        .args(["--database-url", &db_url(&dir), "users", "add"])
        .args(["--email", "ada@example.com", "--name", "Ada"])
        .args(["--password", "on-the-command-line-1"])
        .finished();
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--password"), "{err}");
}

/// An app on plain http beyond this machine: anyone on its network could put a script in its
/// pages, which the CORS answers would hand every token (the refresh cookie, `SameSite=Strict`,
/// may go with a request from an http page of the same site).
#[test]
fn a_cors_origin_on_plain_http_beyond_this_machine_is_refused() {
    let out = Command::new(server_binary())
        .args([
            "--bind",
            "127.0.0.1:0",
            "--allowed-origin",
            "https://app.example.com,http://app.example.com",
            "--database-url",
            "sqlite::memory:",
        ])
        .finished();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--allowed-origin http://app.example.com is plain http"),
        "{err}"
    );
}

/// Settings under which the feed or the maintenance cannot do their work are refused: an idle
/// timeout that cuts every feed stream between two keepalives (15 s apart), and a key poll over
/// a minute (it paces the purges and the revocation list's pruning too).
#[test]
fn an_idle_timeout_that_cuts_the_feed_or_a_key_poll_over_a_minute_is_refused() {
    let dir = std::env::temp_dir().join(format!("tw-feed-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("feed-token");
    std::fs::write(&token, "feed-token-0123456789abcdef0123456789").unwrap();
    let token: &'static str = token.to_str().unwrap().to_owned().leak();
    let base = ["--bind", "127.0.0.1:0", "--database-url", "sqlite::memory:"];
    let with = |more: &[&'static str]| [&base[..], more].concat();
    let e = refused(
        &with(&[
            "--revocation-feed-token-file",
            token,
            "--idle-timeout-secs",
            "20",
        ]),
        &[],
    );
    assert!(e.contains("--idle-timeout-secs must be at least 30"), "{e}");
    let e = refused(&with(&["--key-poll-secs", "61"]), &[]);
    assert!(e.contains("--key-poll-secs must be at most 60"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--connect-src` goes into the pages' Content-Security-Policy: nothing but an origin may.
#[test]
fn a_connect_src_that_is_not_an_origin_is_refused() {
    for bad in [
        "*",
        "https://api.example; script-src *",
        "https://a b",
        "data:",
        "'unsafe-eval'",
    ] {
        let stderr = refused(
            &[
                "--bind",
                "127.0.0.1:0",
                "--connect-src",
                bad,
                "--database-url",
                "sqlite::memory:",
            ],
            &[],
        );
        assert!(
            stderr.contains("explicit http(s) origin"),
            "{bad}: {stderr}"
        );
    }
}

#[tokio::test]
async fn demo_mode_prints_credentials_that_log_in() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(server_binary())
        .args(["--demo", "--bind", "127.0.0.1:0"])
        .env("TW_DATABASE_URL", db_url(&dir))
        .env("RUST_LOG", "warn")
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut base = None;
    let mut creds = None;
    for line in lines.by_ref().take(5) {
        let line = line.unwrap();
        if let Some(url) = line.strip_prefix("tokenwarden-server listening on ") {
            base = Some(url.to_owned());
        }
        if let Some(c) = line.strip_prefix("demo user: ") {
            let (email, password) = c.split_once(" / ").unwrap();
            creds = Some((email.to_owned(), password.to_owned()));
            break;
        }
    }
    let (base, (email, password)) = (
        base.expect("address printed"),
        creds.expect("credentials printed"),
    );
    let res = Client::to(&base).login((&email, &password)).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body["expires_in"], 30, "short tokens in demo mode");
    let _ = child.kill();
    let _ = child.wait();
}

/// A `www` (or `pkg`) where the server happens to start is served only by the demo, or when
/// named: a production instance started in `/var` served `/var/www`'s scripts on the auth
/// server's origin.
#[tokio::test]
async fn a_www_directory_where_the_server_starts_is_served_only_by_the_demo_or_when_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("www")).unwrap();
    std::fs::write(dir.path().join("www/index.html"), "<p>hi</p>").unwrap();
    let url = db_url(&dir);
    let envs = [
        ("TW_DATABASE_URL", url.as_str()),
        ("TW_KEY_ENCRYPTION_KEY", TEST_KEK),
    ];
    for (args, status) in [
        (&["--bind", "127.0.0.1:0"][..], 404),
        (&["--bind", "127.0.0.1:0", "--www-dir", "www"][..], 200),
        (&["--bind", "127.0.0.1:0", "--demo"][..], 200),
    ] {
        let (child, base) = start(args, &envs, dir.path());
        let res = reqwest::get(format!("{base}/")).await.unwrap();
        stop(child);
        assert_eq!(res.status(), status, "{args:?}");
    }
}

/// Starts the binary with `args`; returns it and its address once it listens.
fn start(
    args: &[&str],
    envs: &[(&str, &str)],
    dir: &std::path::Path,
) -> (std::process::Child, String) {
    let mut child = Command::new(server_binary())
        .args(args)
        .env_remove("TW_KEY_ENCRYPTION_KEY")
        .envs(envs.iter().copied())
        .env("RUST_LOG", "warn")
        .current_dir(dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref().take(5) {
        if let Some(url) = line
            .unwrap()
            .strip_prefix("tokenwarden-server listening on ")
        {
            let url = url.to_owned();
            // Keep draining stdout so the server never blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return (child, url);
        }
    }
    stop(child);
    panic!("the server did not start");
}

fn stop(mut child: std::process::Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn refused(args: &[&str], envs: &[(&str, &str)]) -> String {
    let out = Command::new(server_binary())
        .args(args)
        .env_remove("TW_KEY_ENCRYPTION_KEY")
        .envs(envs.iter().copied())
        .finished();
    assert!(!out.status.success(), "{args:?} was accepted");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `command` run by a shell on a real pseudo-terminal (util-linux's `script`), with the
/// database at `url`, read until it prompts for a password: the process, its terminal's input
/// and output, and what the terminal showed so far.
#[cfg(target_os = "linux")]
fn at_the_prompt(
    command: &str,
    url: &str,
) -> (
    std::process::Child,
    std::process::ChildStdin,
    std::process::ChildStdout,
    Vec<u8>,
) {
    use std::io::Read;
    let mut child = Command::new("script")
        .args(["-qec", command, "/dev/null"])
        .env("TW_DATABASE_URL", url)
        .env("TW_KEY_ENCRYPTION_KEY", TEST_KEK)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("util-linux's script");
    let (stdin, mut out) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
    let mut shown = Vec::new();
    let mut byte = [0u8; 1];
    while !shown.ends_with(b"password: ") {
        let read = out.read(&mut byte).unwrap();
        assert_eq!(read, 1, "{:?}", String::from_utf8_lossy(&shown));
        shown.push(byte[0]);
    }
    (child, stdin, out, shown)
}

/// `users add` asks for the password on a terminal without echoing it: typed into a real
/// pseudo-terminal after the prompt, it is not in what the terminal shows, and the account
/// signs in with it. Interrupted at the prompt, the terminal echoes again.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn users_add_reads_a_typed_password_without_echoing_it() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let url = db_url(&dir);
    let password = "typed-on-a-terminal-7731";
    let bin = server_binary();
    let command = format!("{bin} users add --email ada@example.com --name Ada");
    let (mut child, mut stdin, mut out, mut shown) = at_the_prompt(&command, &url);
    // Typed after the prompt, as a person would.
    stdin.write_all(format!("{password}\n").as_bytes()).unwrap();
    drop(stdin);
    out.read_to_end(&mut shown).unwrap();
    assert!(child.wait().unwrap().success());
    let shown = String::from_utf8_lossy(&shown);
    assert!(!shown.contains(password), "echoed: {shown:?}");
    assert!(shown.contains("ada@example.com"), "{shown:?}");
    let s = TestServer::on(&url, |_| {}).await;
    let res = Client::new(&s).login(("ada@example.com", password)).await;
    assert_eq!(res.status, 200, "{:?}", res.body);
    s.stop().await;

    // Interrupted at the prompt (SIGINT, as Ctrl-C sends it): the process ends as an interrupt
    // ends it (130), and the terminal echoes again.
    let command = format!(
        "sh -c 'echo pid=$$; exec {bin} users add --email bob@example.com --name Bob'; \
         echo exit=$?; stty -a"
    );
    let (mut child, _stdin, mut out, mut shown) = at_the_prompt(&command, &url);
    let text = String::from_utf8_lossy(&shown).into_owned();
    let pid: i32 = text
        .split_once("pid=")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{text:?}"));
    // SAFETY: a signal to the process this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    out.read_to_end(&mut shown).unwrap();
    child.wait().unwrap();
    let shown = String::from_utf8_lossy(&shown);
    assert!(shown.contains("exit=130"), "{shown:?}");
    let settings: Vec<&str> = shown.split_whitespace().collect();
    assert!(settings.contains(&"echo"), "{shown:?}");
    assert!(!settings.contains(&"-echo"), "{shown:?}");
}

/// A secret that must stay out of `ps` and the environment (a PostgreSQL password, the SMTP
/// password, the DPoP nonce secret) can come from a file, as Docker and Kubernetes mount them:
/// what the file holds is what is used; a flag and its file together, a missing or an empty
/// file are refused at start, naming the flag.
#[test]
fn secrets_come_from_files_kept_out_of_the_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        path.display().to_string()
    };
    let db = file("db-url", &format!("{}\n", db_url(&dir)));
    let nonce = file("nonce", &"n".repeat(40));
    let kek = [("TW_KEY_ENCRYPTION_KEY", TEST_KEK)];
    let (child, url) = start(
        &["--bind", "127.0.0.1:0"],
        &[
            kek[0],
            ("TW_DATABASE_URL_FILE", &db),
            ("TW_DPOP_NONCE_SECRET_FILE", &nonce),
        ],
        dir.path(),
    );
    stop(child);
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(
        dir.path().join("tw.db").exists(),
        "the database the file names"
    );
    // What a file holds is the value: too short a nonce secret, an SMTP URL of another scheme.
    // (An in-memory database: a refusal creates no file.)
    let with_file =
        |flag: &str, path: &str| refused(&["--database-url", "sqlite::memory:", flag, path], &kek);
    let short = file("short", "too short");
    let e = with_file("--dpop-nonce-secret-file", &short);
    assert!(
        e.contains("--dpop-nonce-secret must be at least 32 characters"),
        "{e}"
    );
    let smtp = file("smtp", "ftp://user:hunter2@mail.example");
    let e = with_file("--smtp-url-file", &smtp);
    assert!(e.contains("--smtp-url") && e.contains("ftp"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
    // Both ways at once, a file that is not there, an empty file.
    let e = refused(
        &[
            "--database-url",
            "sqlite::memory:",
            "--database-url-file",
            &db,
        ],
        &[],
    );
    assert!(
        e.contains("--database-url-file") && e.contains("cannot be used with"),
        "{e}"
    );
    let e = with_file("--dpop-nonce-secret-file", "/nonexistent/nonce");
    assert!(
        e.contains("--dpop-nonce-secret-file /nonexistent/nonce"),
        "{e}"
    );
    let empty = file("empty", " \n");
    let e = refused(&["--database-url-file", &empty], &kek);
    assert!(
        e.contains("--database-url-file") && e.contains("is empty"),
        "{e}"
    );
}

/// Anything but SQLite or PostgreSQL is refused before anything is created (it used to become a
/// SQLite file named after the URL), and the message names what is accepted, without the
/// password.
#[test]
fn an_unsupported_database_url_is_refused_at_start_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for url in [
        "mysql://tw:secret-pw@db.example/tw",
        "postgre://tw:secret-pw@127.0.0.1/tw",
        "https://example.com/tw.db",
        // A libpq keyword string became a SQLite file named after it, password and all; a
        // JDBC URL's password (its query) was printed.
        "host=db.internal user=tw password=secret-pw dbname=tw",
        "jdbc:postgresql://db/tw?user=tw&password=secret-pw",
        // Azure's forms, with an `@` in the user's name.
        "host=x.postgres.database.azure.com user=me@srv password=secret-pw sslmode=require",
        "jdbc:postgresql://x:5432/db?user=me@srv&password=secret-pw",
    ] {
        let out = Command::new(server_binary())
            .current_dir(dir.path())
            .args(["--database-url", url, "--bind", "127.0.0.1:0"])
            .env("TW_KEY_ENCRYPTION_KEY", TEST_KEK)
            .finished();
        assert!(!out.status.success(), "{url} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("unsupported database URL"), "{err}");
        assert!(
            err.contains("postgres://") && err.contains("sqlite://"),
            "{err}"
        );
        assert!(!err.contains("secret-pw"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "{url}");
    }
    // A PostgreSQL URL is PostgreSQL, never a file, even when nothing answers there.
    let out = Command::new(server_binary())
        .current_dir(dir.path())
        .args([
            "--database-url",
            "postgres://tw:secret-pw@127.0.0.1:1/tw",
            "--bind",
            "127.0.0.1:0",
        ])
        .env("TW_KEY_ENCRYPTION_KEY", TEST_KEK)
        .finished();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("opening the PostgreSQL database"), "{err}");
    assert!(!err.contains("secret-pw"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    // A PGSSLMODE that is no sslmode is refused: the driver would take its default, `prefer`
    // (the clear when the server has no TLS), and the server would take it as the operator's.
    for mode in ["", "verify_full"] {
        let out = Command::new(server_binary())
            .current_dir(dir.path())
            .args(["--database-url", "postgres://tw:secret-pw@db.example/tw"])
            .env("TW_KEY_ENCRYPTION_KEY", TEST_KEK)
            .env("PGSSLMODE", mode)
            .finished();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("PGSSLMODE={mode:?} is no sslmode")),
            "{err}"
        );
    }
}

/// A release build (`cargo build --release`, `cargo install`, `make demo`) has no test hooks:
/// it refuses `--test-hooks`, and every `/test/*` path is a 404, secret or not.
#[cfg(not(feature = "test-hooks"))]
#[tokio::test]
async fn a_binary_without_the_test_hooks_feature_has_no_test_routes() {
    let stderr = refused(
        &[
            "--bind",
            "127.0.0.1:0",
            "--test-hooks",
            "--database-url",
            "sqlite::memory:",
        ],
        &[],
    );
    assert!(
        stderr.contains("built without the `test-hooks` feature"),
        "{stderr}"
    );
    let stderr = refused(
        &["--bind", "127.0.0.1:0", "--database-url", "sqlite::memory:"],
        &[("TW_TEST_HOOKS", "true")],
    );
    assert!(stderr.contains("`test-hooks` feature"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let (child, base) = start(
        &["--bind", "127.0.0.1:0", "--database-url", "sqlite::memory:"],
        &[("TW_TEST_HOOKS_SECRET", "a-secret-somebody-set")],
        dir.path(),
    );
    let mut c = Client::to(&base);
    let body = serde_json::json!({ "advance_secs": 3600, "email": "m@example.com", "password": "mallory-pw", "name": "m" });
    for (method, path) in [
        ("GET", "/test/stats"),
        ("POST", "/test/reset"),
        ("POST", "/test/faults"),
        ("POST", "/test/clock"),
        ("POST", "/test/keys/rotate"),
        ("POST", "/test/keys/revoke"),
        ("POST", "/test/users"),
        ("GET", "/test/echo"),
        ("GET", "/test"),
        ("GET", "/test/anything/else"),
    ] {
        for secret in [None, Some("a-secret-somebody-set")] {
            let extra: Vec<_> = secret
                .map(|s| ("x-test-hooks-secret", s))
                .into_iter()
                .collect();
            let res = c.send_once(method, path, Some(&body), &extra).await;
            assert_eq!(res.status, 404, "{method} {path}");
            assert_eq!(res.error(), "not_found");
        }
    }
    stop(child);
}

#[tokio::test]
async fn demo_mode_is_refused_off_loopback_unless_meant() {
    let dir = tempfile::tempdir().unwrap();
    let url = db_url(&dir);
    let stderr = refused(
        &["--demo", "--bind", "0.0.0.0:0", "--database-url", &url],
        &[],
    );
    assert!(
        stderr.contains("refused on a non-loopback address"),
        "{stderr}"
    );
    assert!(stderr.contains("--demo-public"), "{stderr}");
    let (child, _) = start(
        &[
            "--demo",
            "--demo-public",
            "--bind",
            "0.0.0.0:0",
            "--database-url",
            &url,
        ],
        &[],
        dir.path(),
    );
    stop(child);
}

#[tokio::test]
async fn the_demo_user_does_not_outlive_demo_mode() {
    let dir = tempfile::tempdir().unwrap();
    let url = db_url(&dir);
    let login = async |base: String| {
        let demo = (
            tokenwarden_server::config::DEMO_EMAIL,
            tokenwarden_server::config::DEMO_PASSWORD,
        );
        Client::to(&base).login(demo).await.status
    };
    let (child, base) = start(
        &["--demo", "--bind", "127.0.0.1:0", "--database-url", &url],
        &[],
        dir.path(),
    );
    assert_eq!(login(base).await, 200);
    stop(child);
    // The same database, now in production: the published password opens nothing.
    let kek = format!("{}/tw.db.kek", dir.path().display());
    let (child, base) = start(
        &[
            "--bind",
            "127.0.0.1:0",
            "--database-url",
            &url,
            "--key-encryption-key-file",
            &kek,
        ],
        &[],
        dir.path(),
    );
    assert_eq!(login(base).await, 401);
    stop(child);
}

#[cfg(unix)]
#[tokio::test]
async fn the_database_file_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/data/tw.db", dir.path().display());
    let s = TestServer::on(&url, |_| {}).await;
    Client::new(&s).sign_in(ALICE).await;
    let mode = |name: &str| {
        std::fs::metadata(dir.path().join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("data"), 0o700);
    for file in ["data/tw.db", "data/tw.db-wal", "data/tw.db-shm"] {
        assert_eq!(mode(file), 0o600, "{file}");
    }
    s.stop().await;
    // A file left world-readable by an older version is narrowed at the next start.
    std::fs::set_permissions(
        dir.path().join("data/tw.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let s = TestServer::on(&url, |_| {}).await;
    assert_eq!(mode("data/tw.db"), 0o600);
    s.stop().await;
}

/// The DPoP nonce key the server makes for itself is sealed by the key-encryption key: a
/// database dump alone does not give it. It was stored in the clear, and whoever held it could
/// make the nonce of any time to come, so proofs a script signed ahead for then would pass.
#[tokio::test]
async fn the_dpop_nonce_key_is_sealed_in_the_database() {
    use base64::Engine;
    use sqlx::Row;
    let dir = tempfile::tempdir().unwrap();
    let url = db_url(&dir);
    let s = TestServer::on(&url, |c| c.dpop_nonce_secret = None).await;
    s.stop().await;
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let rows = sqlx::query("SELECT name, value FROM server_secrets")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    let secrets: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r.get("name"), r.get("value")))
        .collect();
    assert!(
        !secrets.iter().any(|(name, _)| name == "dpop_nonce"),
        "{secrets:?}"
    );
    let (_, value) = secrets
        .iter()
        .find(|(name, _)| name == "dpop_nonce_key")
        .expect("the nonce key");
    let stored = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value)
        .unwrap();
    assert!(tokenwarden_server::kek::is_sealed(&stored));

    // A database of the version before, its secret in the clear: sealed as it is (the nonces
    // of a fleet upgraded one instance at a time stay the same), and the clear one deleted.
    let clear = tokenwarden_server::tokens::random_token();
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("DELETE FROM server_secrets WHERE name = 'dpop_nonce_key'")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO server_secrets (name, value) VALUES ('dpop_nonce', $1)")
        .bind(&clear)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let s = TestServer::on(&url, |c| c.dpop_nonce_secret = None).await;
    // (This one instance hands out nonces from its start on: the time differs, the key not.)
    let before = tokenwarden_dpop::Nonces::new(clear.as_bytes()).unwrap();
    let nonce = s.state.dpop.nonces().current(s.state.now());
    assert!(
        before.issue_time_of(&nonce).is_some(),
        "a nonce of the same key"
    );
    assert_eq!(s.state.store.secret("dpop_nonce").await.unwrap(), None);
    assert!(
        s.state
            .store
            .secret("dpop_nonce_key")
            .await
            .unwrap()
            .is_some()
    );
    s.stop().await;
}

async fn stored_private_keys(url: &str) -> Vec<Vec<u8>> {
    use sqlx::Row;
    let pool = sqlx::SqlitePool::connect(url).await.unwrap();
    let rows = sqlx::query("SELECT private_key FROM signing_keys")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows.iter().map(|r| r.get("private_key")).collect()
}

#[tokio::test]
async fn signing_keys_are_sealed_at_rest_and_need_the_key_encryption_key() {
    let dir = tempfile::tempdir().unwrap();
    let url = db_url(&dir);
    let s = TestServer::on(&url, |_| {}).await;
    // Not in the second the first key started (a rotation then starts a second later).
    s.state.clock.advance(1);
    let t = Client::new(&s).sign_in(ALICE).await;
    s.state
        .keys
        .rotate(&s.state.store, s.state.now(), 0)
        .await
        .unwrap();
    s.stop().await;
    let keys = stored_private_keys(&url).await;
    assert_eq!(keys.len(), 2);
    for k in &keys {
        assert!(k.starts_with(b"twk1"), "sealed");
        // PKCS#8 DER of an Ed25519 key starts 30 2e 02 01 00 30 05 06 03 2b 65 70.
        assert!(
            !k.windows(3).any(|w| w == [0x2b, 0x65, 0x70]),
            "no DER in the clear"
        );
    }

    // The binary refuses to start on a database file without a key-encryption key...
    let stderr = refused(&["--bind", "127.0.0.1:0", "--database-url", &url], &[]);
    assert!(stderr.contains("TW_KEY_ENCRYPTION_KEY"), "{stderr}");
    // ...and with the wrong one.
    let wrong = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let stderr = refused(
        &["--bind", "127.0.0.1:0", "--database-url", &url],
        &[("TW_KEY_ENCRYPTION_KEY", wrong)],
    );
    assert!(stderr.contains("does not open"), "{stderr}");
    // With the right one, the old session goes on.
    let dir2 = tempfile::tempdir().unwrap();
    let (child, base) = start(
        &["--bind", "127.0.0.1:0", "--database-url", &url],
        &[("TW_KEY_ENCRYPTION_KEY", TEST_KEK)],
        dir2.path(),
    );
    let res = Client::to(&base).present(&t.refresh).await;
    assert_eq!(res.status, 200);
    stop(child);
}

#[tokio::test]
async fn a_signing_key_stored_in_the_clear_by_an_older_version_is_sealed_and_keeps_signing() {
    let dir = tempfile::tempdir().unwrap();
    let url = db_url(&dir);
    let s = TestServer::on(&url, |_| {}).await;
    s.stop().await;
    // What an older version wrote: a signing key in plain PKCS#8.
    let old = tokenwarden_server::keys::generate().unwrap();
    {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query("UPDATE signing_keys SET retired_at = 1")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO signing_keys (kid, private_key, public_key, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(&old.kid)
        .bind(&old.private_key)
        .bind(&old.public_key)
        .bind(i64::MAX / 2)
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    let s = TestServer::on(&url, |_| {}).await;
    let mut c = Client::new(&s);
    let t = c.sign_in(ALICE).await;
    assert_eq!(jwt_parts(&t.access).0["kid"], old.kid.as_str());
    assert_eq!(c.me(&t.access).await.status, 200);
    s.stop().await;
    assert!(
        stored_private_keys(&url)
            .await
            .iter()
            .all(|k| k.starts_with(b"twk1"))
    );
}
