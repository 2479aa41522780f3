//! Bringing users in and the account flows (docs/PROTOCOL.md, "Accounts"), over real HTTP, on
//! SQLite or PostgreSQL (`TW_TEST_BACKEND`), with a real SMTP server (aiosmtpd) and hashes made
//! by the libraries other apps use (Python's bcrypt, argon2-cffi and hashlib).

mod common;

use std::process::Command;

use common::smtp::SmtpSink;
use common::*;
use serde_json::{Value, json};
use tokenwarden_server::Settings;
use tokenwarden_server::hashes::{Kind, kind_of};

const PASSWORD: &str = "imported-password-1";

/// Hashes of `password` in every format an app may export, made by the libraries those apps
/// use: (label, hash).
fn foreign_hashes(password: &str) -> Vec<(String, String)> {
    let script = r#"
import sys, os, base64, hashlib, bcrypt, argon2
pw = sys.argv[1].encode()
def b64(b): return base64.b64encode(b).decode().rstrip("=")
print("bcrypt-2b\t" + bcrypt.hashpw(pw, bcrypt.gensalt(rounds=4)).decode())
print("bcrypt-2a\t" + bcrypt.hashpw(pw, bcrypt.gensalt(rounds=4, prefix=b"2a")).decode())
print("bcrypt-2y\t$2y$" + bcrypt.hashpw(pw, bcrypt.gensalt(rounds=4)).decode()[4:])
print("argon2id\t" + argon2.PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(pw))
print("argon2i\t" + argon2.PasswordHasher(time_cost=2, memory_cost=8192, parallelism=1, type=argon2.Type.I).hash(pw))
salt = os.urandom(16)
print("scrypt\t$scrypt$ln=10,r=8,p=1$" + b64(salt) + "$" + b64(hashlib.scrypt(pw, salt=salt, n=1024, r=8, p=1, dklen=32)))
salt = os.urandom(16)
print("pbkdf2\t$pbkdf2-sha256$i=1000,l=32$" + b64(salt) + "$" + b64(hashlib.pbkdf2_hmac("sha256", pw, salt, 1000)))
print("django\tpbkdf2_sha256$1000$Qx7abcdEFG12$" + base64.b64encode(hashlib.pbkdf2_hmac("sha256", pw, b"Qx7abcdEFG12", 1000)).decode())
"#;
    let out = Command::new("/usr/bin/python3")
        .args(["-c", script, password])
        .output()
        .expect("python3 (scripts/setup.sh installs python3-bcrypt and python3-argon2)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (label, hash) = l.split_once('\t').unwrap();
            (label.to_owned(), hash.to_owned())
        })
        .collect()
}

/// Imports `lines` (JSON Lines) into the server's store.
async fn import(s: &TestServer, lines: &[Value]) -> tokenwarden_server::users::ImportReport {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    tokenwarden_server::users::import(&s.state.store, text.as_bytes(), false, s.state.now())
        .await
        .unwrap()
}

async fn stored_hash(s: &TestServer, email: &str) -> String {
    s.state.store.user_by_email(email).await.unwrap().unwrap().1
}

#[tokio::test]
async fn every_imported_hash_format_signs_in_and_becomes_argon2id() {
    let s = TestServer::start().await;
    let hashes = foreign_hashes(PASSWORD);
    assert_eq!(hashes.len(), 8);
    let lines: Vec<Value> = hashes
        .iter()
        .map(|(label, hash)| {
            json!({ "email": format!("{label}@import.test"), "id": format!("app-{label}"),
                    "password_hash": hash, "roles": ["user"] })
        })
        .collect();
    let report = import(&s, &lines).await;
    assert_eq!((report.imported, report.refused.len()), (8, 0));
    for (label, hash) in &hashes {
        let email = format!("{label}@import.test");
        let before = kind_of(hash).unwrap_or_else(|e| panic!("{label}: {e}"));
        let mut c = Client::new(&s).oneshot();
        let wrong = c.login((&email, "not-the-password")).await;
        assert_eq!(wrong.status, 401, "{label}: a wrong password");
        assert_eq!(wrong.error(), "invalid_credentials");
        assert_eq!(stored_hash(&s, &email).await, *hash, "{label}: untouched");
        let right = c.login((&email, PASSWORD)).await;
        assert_eq!(right.status, 200, "{label}: {:?}", right.body);
        let (_, claims) = jwt_parts(c.access.as_deref().unwrap());
        assert_eq!(claims["sub"], format!("app-{label}"), "the app's own id");
        let after = stored_hash(&s, &email).await;
        assert_eq!(kind_of(&after), Ok(Kind::Argon2id), "{label}");
        // Every one, argon2id too (its costs are the importing app's, m=8 MiB and t=1 here:
        // this server's own, m=19 MiB and t=2, from now on).
        assert_ne!(after, *hash, "{label} ({before:?}): rehashed");
        assert!(!tokenwarden_server::hashes::needs_rehash(&after), "{label}");
        // And the new hash signs in too.
        assert_eq!(Client::new(&s).login((&email, PASSWORD)).await.status, 200);
    }
    s.stop().await;
}

/// How long `invalid_credentials` takes says nothing about the address: an imported hash that
/// is slow to check (here PBKDF2 with 100,000 iterations) used to refuse
/// in its own time while an unknown address refused in the argon2id dummy's, which told who has
/// an imported account. Every refusal now lasts at least as long as the slowest hashing turn
/// before it (a lower bound the server sleeps to). What the floor does not cover (the queries
/// before the hash, the request itself) varies with the machine's load: medians of interleaved
/// rounds, and 0.7 of the imported account's time. Without the floor the unknown addresses
/// took 0.08 of it here (24 ms against 292 ms).
#[tokio::test]
async fn a_refusal_takes_as_long_for_an_unknown_address_as_for_an_imported_account() {
    let s = TestServer::start().await;
    let out = Command::new("/usr/bin/python3")
        .args([
            "-c",
            r#"import os, base64, hashlib
b64 = lambda b: base64.b64encode(b).decode().rstrip("=")
salt = os.urandom(16)
print("$pbkdf2-sha256$i=100000,l=32$" + b64(salt) + "$" + b64(hashlib.pbkdf2_hmac("sha256", b"the password", salt, 100000)))"#,
        ])
        .output()
        .expect("python3");
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let line = json!({ "email": "slow@import.test", "id": "app-slow", "password_hash": hash, "roles": ["user"] });
    assert_eq!(import(&s, &[line]).await.imported, 1);
    let mut c = Client::new(&s).oneshot();
    // Three rounds, each address once per round: whatever else loads the machine (other suites
    // run beside this one) lengthens all three alike, and the medians are compared.
    let addresses = [
        "slow@import.test",
        "nobody@import.test",
        "ALICE@example.com-not",
    ];
    let mut took = [const { Vec::new() }; 3];
    for _ in 0..3 {
        for (i, email) in addresses.iter().enumerate() {
            let t = std::time::Instant::now();
            let a = c.login((email, "not-the-password")).await;
            assert_eq!((a.status, a.error()), (401, "invalid_credentials"));
            took[i].push(t.elapsed());
        }
    }
    let median = |v: &mut Vec<std::time::Duration>| {
        v.sort();
        v[1]
    };
    let [imported, nobody, alice] = took.map(|mut v| median(&mut v));
    // (The floor stops growing at a second.)
    let floor = imported.min(std::time::Duration::from_secs(1));
    for (unknown, t) in [(addresses[1], nobody), (addresses[2], alice)] {
        assert!(
            t >= floor.mul_f64(0.7),
            "{unknown}: refused in {t:?} (median of 3), the imported account in {imported:?}"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn an_import_is_all_or_nothing_reports_every_bad_line_and_runs_twice_unchanged() {
    let s = TestServer::start().await;
    let hash = foreign_hashes(PASSWORD).remove(0).1;
    let good = vec![
        json!({ "email": "Ann@Import.test", "id": "u-1", "name": "Ann", "email_verified": true,
                "password_hash": hash, "roles": ["user", "admin"], "claims": { "plan": "pro" } }),
        json!({ "email": "bob@import.test" }),
    ];
    let mut bad = good.clone();
    bad.extend([
        json!({ "email": "not-an-address" }),
        json!({ "email": "c@import.test", "password_hash": "$md5$abc" }),
        json!({ "email": "d@import.test", "claims": { "sub": "someone-else" } }),
        json!({ "email": "e@import.test", "password_hash": "$2b$31$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234" }),
        json!({ "email": "ann@import.test", "id": "u-9" }),
        json!({ "email": "f@import.test", "id": "u-1" }),
        json!({ "email": "g@import.test", "surprise": true }),
        json!({ "email": ALICE.0, "id": "not-alices-id" }),
        // Ann's mailbox spelt with a full-width letter: another account for one mailbox.
        json!({ "email": "ann@\u{FF49}mport.test" }),
    ]);
    let report = import(&s, &bad).await;
    let lines: Vec<usize> = report.refused.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        lines,
        vec![3, 4, 5, 6, 7, 8, 9, 10, 11],
        "{:?}",
        report.refused
    );
    let why = |n: usize| {
        report
            .refused
            .iter()
            .find(|(l, _)| *l == n)
            .unwrap()
            .1
            .clone()
    };
    assert!(why(3).contains("not an address"), "{}", why(3));
    assert!(
        why(4).contains("unknown password hash format"),
        "{}",
        why(4)
    );
    assert!(why(5).contains("reserved"), "{}", why(5));
    assert!(why(6).contains("cost"), "{}", why(6));
    assert!(why(7).contains("twice"), "{}", why(7));
    assert!(why(9).contains("surprise"), "{}", why(9));
    assert!(why(10).contains("another user"), "{}", why(10));
    assert!(why(11).contains("another spelling"), "{}", why(11));
    assert_eq!(report.imported, 0);
    assert!(
        s.state
            .store
            .user_by_email("bob@import.test")
            .await
            .unwrap()
            .is_none(),
        "nothing half-imported"
    );
    // The good lines alone: imported; again: nothing changes.
    let first = import(&s, &good).await;
    assert_eq!((first.imported, first.unchanged), (2, 0));
    let again = import(&s, &good).await;
    assert_eq!(
        (again.imported, again.unchanged, again.refused.len()),
        (0, 2, 0)
    );
    let (ann, _) = s
        .state
        .store
        .user_by_email("ann@import.test")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ann.id, "u-1");
    assert!(ann.email_verified);
    assert_eq!(ann.claims["plan"], "pro");
    // Bob has no password: nothing signs him in with one (and it takes as long as a wrong one).
    let res = Client::new(&s).login(("bob@import.test", "")).await;
    assert_eq!(res.status, 400);
    let res = Client::new(&s).login(("bob@import.test", PASSWORD)).await;
    assert_eq!(res.error(), "invalid_credentials");
    // Ann's token carries what the app owns.
    let mut c = Client::new(&s).oneshot();
    assert_eq!(c.login(("ann@import.test", PASSWORD)).await.status, 200);
    let (_, claims) = jwt_parts(c.access.as_deref().unwrap());
    assert_eq!(claims["plan"], "pro");
    assert_eq!(claims["roles"], json!(["user", "admin"]));
    assert_eq!(claims["email_verified"], true);
    s.stop().await;
}

#[tokio::test]
async fn claims_the_app_sets_are_in_the_next_refresh_and_reserved_names_are_refused() {
    let s = TestServer::start().await;
    let mut c = Client::new(&s).oneshot();
    assert_eq!(c.login(ALICE).await.status, 200);
    let set = |claims: &'static str| {
        let store = s.state.store.clone();
        async move { tokenwarden_server::users::set_claims(&store, ALICE.0, Some(claims), None).await }
    };
    // Nested deeper than the verifiers read a token (32 levels, the payload's own included):
    // stored, every token of the user was refused by every verifier.
    let nested = |levels: usize| {
        let deep = format!("{}1{}", "[".repeat(levels), "]".repeat(levels));
        &*format!(r#"{{"deep": {deep}}}"#).leak()
    };
    for bad in [
        r#"{"sub": "x"}"#,
        r#"{"cnf": {}}"#,
        "[1]",
        "not json",
        nested(32),
    ] {
        assert!(set(bad).await.is_err(), "{bad}");
    }
    assert_eq!(set(nested(31)).await, Ok(true));
    assert_eq!(c.refresh().await.status, 200);
    let access = c.access.clone().unwrap();
    assert_eq!(c.me(&access).await.status, 200, "as deep as they read");
    assert_eq!(
        set(r#"{"phone_verified": true, "plan": "pro"}"#).await,
        Ok(true)
    );
    let roles = ["user".to_owned(), "billing".to_owned()];
    tokenwarden_server::users::set_claims(&s.state.store, ALICE.0, None, Some(&roles))
        .await
        .unwrap();
    assert_eq!(c.refresh().await.status, 200);
    let (_, claims) = jwt_parts(c.access.as_deref().unwrap());
    assert_eq!(claims["phone_verified"], true);
    assert_eq!(claims["plan"], "pro");
    assert_eq!(claims["roles"], json!(["user", "billing"]));
    s.stop().await;
}

// ---- lazy migration --------------------------------------------------------------------------

/// The old backend: a small real HTTP server. `old@legacy.test` / `old-password-1` is a user.
async fn legacy_backend(secret: &'static str) -> (String, tokio::task::JoinHandle<()>) {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/check",
        post(move |headers: axum::http::HeaderMap, body: axum::Json<Value>| async move {
            let shown = headers
                .get("x-tokenwarden-legacy-secret")
                .and_then(|v| v.to_str().ok());
            if shown != Some(secret) {
                return (axum::http::StatusCode::FORBIDDEN, axum::Json(json!({})));
            }
            // Two more accounts of the old backend, which never checked addresses: one whose
            // address it does not vouch for, one it names by the id an import kept.
            if body["password"] == "old-password-1" && body["email"] == "squat@legacy.test" {
                return (axum::http::StatusCode::OK, axum::Json(json!({ "name": "Squatter" })));
            }
            // Another spelling of a mailbox, which the old app never checked.
            if body["email"] == "\"old\"@legacy.test" && body["password"] == "old-password-1" {
                return (axum::http::StatusCode::OK, axum::Json(json!({})));
            }
            // A login endpoint that says "no" inside a 200, or answers with no object at all.
            if body["email"] == "falsy@legacy.test" {
                let no = json!({ "success": false, "error": "wrong password" });
                return (axum::http::StatusCode::OK, axum::Json(no));
            }
            // An old app that vouches for every address it holds, including whatever one
            // someone registered there.
            if body["email"].as_str().is_some_and(|e| e.ends_with(".invalid")) {
                let yes = json!({ "email_verified": true, "name": "Registered" });
                return (axum::http::StatusCode::OK, axum::Json(yes));
            }
            if body["email"] == "array@legacy.test" {
                return (axum::http::StatusCode::OK, axum::Json(json!([])));
            }
            if body["password"] == "old-password-1" && body["email"] == "kept@legacy.test" {
                return (axum::http::StatusCode::OK, axum::Json(json!({ "id": "kept-1" })));
            }
            if body["email"] == "old@legacy.test" && body["password"] == "old-password-1" {
                return (
                    axum::http::StatusCode::OK,
                    axum::Json(json!({ "id": "legacy-42", "name": "Old User",
                        "email_verified": true, "roles": ["user"], "claims": { "plan": "legacy" } })),
                );
            }
            (axum::http::StatusCode::UNAUTHORIZED, axum::Json(json!({})))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/check", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, task)
}

/// A server that mails its codes to `sink` and whose lazy migration asks [`legacy_backend`]
/// (the backend's task, to keep while the server is used).
async fn with_legacy_and_mail(sink: &SmtpSink) -> (TestServer, tokio::task::JoinHandle<()>) {
    let secret = "legacy-shared-secret-0123";
    let (url, backend) = legacy_backend(secret).await;
    let s = mail_server(sink, |c| {
        c.legacy = Some(tokenwarden_server::config::LegacySettings {
            url,
            secret: secret.into(),
            timeout: std::time::Duration::from_millis(1500),
        });
    })
    .await;
    (s, backend)
}

/// An account opened here without a password (a code sign-up, an import without a hash), its
/// address verified at `verified` or not.
async fn passwordless<'a>(
    s: &TestServer,
    id: &'a str,
    email: &'a str,
    verified: Option<i64>,
) -> tokenwarden_server::store::NewUser<'a> {
    let user = tokenwarden_server::store::NewUser {
        id,
        email,
        roles: &[],
        name: "owner",
        password_hash: "",
        email_verified_at: verified,
        password_unproved: false,
        claims: "{}",
        now: 1,
    };
    assert!(s.state.store.create_user(&user).await.unwrap());
    user
}

/// A server whose lazy migration asks the old backend at `url`.
async fn with_legacy(url: &str, secret: &str) -> TestServer {
    let (url, secret) = (url.to_owned(), secret.to_owned());
    TestServer::with(move |c: &mut Settings| {
        c.legacy = Some(tokenwarden_server::config::LegacySettings {
            url,
            secret,
            timeout: std::time::Duration::from_millis(1500),
        });
    })
    .await
}

#[tokio::test]
async fn a_lazy_migration_imports_a_user_the_old_backend_vouches_for() {
    let secret = "legacy-shared-secret-0123";
    let (url, backend) = legacy_backend(secret).await;
    let s = with_legacy(&url, secret).await;
    // Nothing imported: a wrong password (the old backend refuses); a 200 that says "no" in
    // words of its own, or whose body is no object (it vouches for nobody: an old backend that
    // fails); an address no other way in takes (no account on the old backend's word).
    for (who, answer) in [
        (
            ("old@legacy.test", "guess-guess-1"),
            (401, "invalid_credentials"),
        ),
        (
            ("falsy@legacy.test", "any-password-1"),
            (503, "temporarily_unavailable"),
        ),
        (
            ("array@legacy.test", "any-password-1"),
            (503, "temporarily_unavailable"),
        ),
        (
            ("\"old\"@legacy.test", "old-password-1"),
            (401, "invalid_credentials"),
        ),
    ] {
        let res = Client::new(&s).login(who).await;
        assert_eq!((res.status, res.error()), answer, "{who:?}");
        let user = s.state.store.user_by_email(who.0).await.unwrap();
        assert!(user.is_none(), "{who:?}");
    }
    // The right one: imported with the old backend's id, profile and claims, and signed in.
    let mut c = Client::new(&s).oneshot();
    assert_eq!(
        c.login(("old@legacy.test", "old-password-1")).await.status,
        200
    );
    let (_, claims) = jwt_parts(c.access.as_deref().unwrap());
    assert_eq!(claims["sub"], "legacy-42");
    assert_eq!(claims["name"], "Old User");
    assert_eq!(claims["plan"], "legacy");
    assert_eq!(claims["email_verified"], true);
    let hash = stored_hash(&s, "old@legacy.test").await;
    assert_eq!(kind_of(&hash), Ok(Kind::Argon2id));
    // The old backend goes away: the imported user signs in all the same ...
    backend.abort();
    let _ = backend.await;
    assert_eq!(
        Client::new(&s)
            .login(("old@legacy.test", "old-password-1"))
            .await
            .status,
        200
    );
    // ... and a user it has not vouched for yet gets a clear error, never a sign-in.
    let res = Client::new(&s)
        .login(("other@legacy.test", "old-password-1"))
        .await;
    assert_eq!((res.status, res.error()), (503, "temporarily_unavailable"));
    assert!(res.header("retry-after").is_some());
    // A known user with a password never reaches the old backend.
    assert_eq!(Client::new(&s).login(ALICE).await.status, 200);
    s.stop().await;
}

/// An account here without a password (a code sign-up, a provider's, an import without a
/// hash) is asked of the old backend too; its word sets the password only if it vouches for the
/// address or names this very account while its address is unproved here (then marked as
/// possibly a stranger's). Before, whoever had registered the address at an old backend that
/// never checked addresses took the account here over with that password.
#[tokio::test]
async fn the_old_backend_sets_no_password_of_an_account_it_does_not_vouch_for() {
    let secret = "legacy-shared-secret-0123";
    let (url, _backend) = legacy_backend(secret).await;
    let s = with_legacy(&url, secret).await;
    passwordless(&s, "owner-1", "squat@legacy.test", Some(1)).await;
    passwordless(&s, "kept-1", "kept@legacy.test", None).await;
    let res = Client::new(&s)
        .login(("squat@legacy.test", "old-password-1"))
        .await;
    assert_eq!((res.status, res.error()), (401, "invalid_credentials"));
    assert_eq!(
        stored_hash(&s, "squat@legacy.test").await,
        "",
        "no password set"
    );
    let res = Client::new(&s)
        .login(("kept@legacy.test", "old-password-1"))
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_ne!(stored_hash(&s, "kept@legacy.test").await, "");
    assert_eq!(s.state.store.password_mark("kept-1").await.unwrap(), 1);
    s.stop().await;

    // The import vouched for the address itself (`email_verified`, no hash): the old backend's
    // password for that id is the owner's, not marked.
    let s = with_legacy(&url, secret).await;
    passwordless(&s, "kept-1", "kept@legacy.test", Some(1)).await;
    let res = Client::new(&s)
        .login(("kept@legacy.test", "old-password-1"))
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(s.state.store.password_mark("kept-1").await.unwrap(), 0);
    s.stop().await;
}

/// The addresses the server makes up for a provider's accounts (`<hash>@NAME.oidc.invalid`,
/// in the account's tokens) have no mailbox: whoever registered one at the old app gets no
/// password on the account it stands for, nor an account of its own under one, which the
/// provider's user's first sign-in would then find another's. (Nor does an import or a sign-up:
/// `password::tests`, the rule of a new account's address.)
#[tokio::test]
async fn the_old_backend_sets_no_password_on_a_provider_s_made_up_address() {
    let secret = "legacy-shared-secret-0123";
    let (url, _backend) = legacy_backend(secret).await;
    let s = with_legacy(&url, secret).await;
    let taken = "0123456789abcdef0123456789abcdef@google.oidc.invalid";
    let free = "fedcba9876543210fedcba9876543210@google.oidc.invalid";
    passwordless(&s, "provider-1", taken, None).await;
    for email in [taken, free] {
        let res = Client::new(&s).login((email, "registered-there-1")).await;
        assert_eq!((res.status, res.error()), (401, "invalid_credentials"));
    }
    assert_eq!(stored_hash(&s, taken).await, "", "no password set");
    assert!(s.state.store.user_by_email(free).await.unwrap().is_none());
    // An address under `invalid` that is not one of those: refused as a new account's only.
    let res = Client::new(&s)
        .login(("ann@example.invalid", "registered-there-1"))
        .await;
    assert_eq!(res.status, 401);
    s.stop().await;
}

/// The account the old backend names by its id has no password here, and its owner signs in by
/// a code first (nothing to end then): the address is proved here, and the old backend's word,
/// which does not vouch for the address, no longer sets a password on it (whoever registered
/// the address there would take the account the owner already uses). Also when the account was
/// imported with its address verified: the code proved it here all the same (before, only an
/// unverified address was marked so, and the old backend's word then set a password).
#[tokio::test]
async fn the_old_backend_sets_no_password_after_the_owner_proved_the_address() {
    for verified in [None, Some(1)] {
        let sink = SmtpSink::start();
        let (s, _backend) = with_legacy_and_mail(&sink).await;
        let user = passwordless(&s, "kept-1", "kept@legacy.test", verified).await;
        let mut owner = Client::new(&s).oneshot();
        owner.request_code(user.email).await;
        let code = sink.wait_for(user.email, 1).await.code();
        assert_eq!(owner.verify_code(user.email, &code).await.status, 200);
        let stranger = Client::new(&s)
            .oneshot()
            .login((user.email, "old-password-1"))
            .await;
        assert_eq!(
            (stranger.status, stranger.error()),
            (401, "invalid_credentials"),
            "verified {verified:?}"
        );
        assert_eq!(stored_hash(&s, user.email).await, "");
        s.stop().await;
    }
}

/// While the old backend fails (down, or made to fail by filling its questions), an unknown
/// address is answered 503; a wrong password of a known account is too, or the two answers
/// would tell which addresses have an account here. The right password still signs in.
#[tokio::test]
async fn while_the_old_backend_fails_a_known_address_is_answered_like_an_unknown_one() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/check", closed.local_addr().unwrap());
    drop(closed);
    let s = with_legacy(&url, "legacy-shared-secret-0123").await;
    let unknown = Client::new(&s)
        .login(("nobody@legacy.test", "a-password-1"))
        .await;
    assert_eq!(
        (unknown.status, unknown.error()),
        (503, "temporarily_unavailable")
    );
    // Also for an address no new account may have (its domain in punycode), which an account
    // opened before that rule may still hold: the unknown one was answered 401 at once.
    passwordless(&s, "ann-1", "ann@xn--bcher-kva.de", None).await;
    let wrong = "a-password-1";
    let odd_known = Client::new(&s).login(("ann@xn--bcher-kva.de", wrong)).await;
    let odd_unknown = Client::new(&s).login(("bob@xn--bcher-kva.de", wrong)).await;
    for (known, unknown) in [
        (Client::new(&s).login((ALICE.0, wrong)).await, unknown),
        (odd_known, odd_unknown),
    ] {
        assert_eq!(
            (
                known.status,
                known.error(),
                known.body["error_description"].clone()
            ),
            (
                unknown.status,
                unknown.error(),
                unknown.body["error_description"].clone()
            ),
            "a wrong password of a known address answers as an unknown address does"
        );
    }
    assert_eq!(Client::new(&s).login(ALICE).await.status, 200);
    s.stop().await;
}

/// A sign-in the old backend is slow to answer gives its hashing turn back meanwhile: with one
/// turn, Alice signs in while the old backend still holds a sign-in of an unknown address
/// (before, that sign-in held the turn up to the backend's timeout, and a few such requests
/// refused everyone with 503).
#[tokio::test]
async fn a_slow_old_backend_holds_no_hashing_turn() {
    use axum::routing::post;
    let secret = "legacy-shared-secret-0123";
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    let asked = std::sync::Arc::new(tokio::sync::Notify::new());
    let (g, a) = (gate.clone(), asked.clone());
    let app = axum::Router::new().route(
        "/check",
        post(move || async move {
            a.notify_one();
            g.notified().await;
            (axum::http::StatusCode::UNAUTHORIZED, axum::Json(json!({})))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/check", listener.local_addr().unwrap());
    let backend = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    let s = TestServer::with(move |c: &mut Settings| {
        c.argon2_concurrency = 1;
        c.argon2_queue = 4;
        c.legacy = Some(tokenwarden_server::config::LegacySettings {
            url,
            secret: secret.into(),
            timeout: std::time::Duration::from_secs(30),
        });
    })
    .await;
    let mut unknown = Client::new(&s);
    let waiting = tokio::spawn(async move {
        unknown
            .login(("nobody@legacy.test", "some-password-1"))
            .await
    });
    asked.notified().await;
    // The old backend holds that sign-in; Alice's needs the one turn.
    let alice = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        Client::new(&s).login(ALICE),
    )
    .await
    .expect("Alice's sign-in waited for the old backend's answer");
    assert_eq!(alice.status, 200);
    gate.notify_one();
    let refused = waiting.await.unwrap();
    assert_eq!(refused.error(), "invalid_credentials");
    backend.abort();
    s.stop().await;
}

// ---- sign-up, verification, reset, change ------------------------------------------------------

async fn mail_server(sink: &SmtpSink, configure: impl FnOnce(&mut Settings)) -> TestServer {
    let url = sink.url();
    TestServer::with(move |s| {
        s.otp.smtp_url = Some(url);
        s.otp.ip_per_minute = 10_000;
        s.signup_password = true;
        configure(s);
    })
    .await
}

/// A guess sent the moment the sign-up is answered: the code of an unknown address was stored
/// only after its password was hashed, the known address's at once, so the refusal's
/// `attempts_left` (0 vs 2) told who has an account. Both are stored before the answer now.
/// And the background work after it is the same for every address: one argon2 run in the
/// hashing gate, which the sign-ins wait in too (a run only for an address without an account
/// slowed the sign-ins right after a sign-up only then, telling whoever timed them).
#[tokio::test]
async fn a_guess_right_after_the_sign_up_is_answered_alike_for_every_address() {
    let sink = SmtpSink::start();
    let s = mail_server(&sink, |_| {}).await;
    let mut answers = Vec::new();
    for email in ["fresh@example.com", ALICE.0] {
        let hashes = s.state.passwords.hasher.hashes();
        let mut c = Client::bound(&s).oneshot();
        let res = c
            .post(
                "/auth/signup",
                &json!({ "email": email, "password": "a fine new password" }),
            )
            .await;
        assert_eq!(res.status, 202, "{}", res.body);
        let guess = c
            .post(
                "/auth/signup/verify",
                &json!({ "email": email, "code": "000000" }),
            )
            .await;
        answers.push((guess.status, guess.body));
        // The code, or the notice that the address has an account: the work is done.
        sink.wait_for(email, 1).await;
        assert_eq!(s.state.passwords.hasher.hashes() - hashes, 1, "{email}");
    }
    assert_eq!(
        answers[0], answers[1],
        "the same refusal for both addresses"
    );
    assert_eq!(answers[0].1["error"], "invalid_code", "{}", answers[0].1);
    s.stop().await;
}

#[tokio::test]
async fn sign_up_answers_alike_for_every_address_and_the_code_creates_and_signs_in() {
    let sink = SmtpSink::start();
    let s = mail_server(&sink, |_| {}).await;
    let mut c = Client::bound(&s).oneshot();
    let new = c
        .post(
            "/auth/signup",
            &json!({ "email": "new@example.com", "password": "a fine new password", "name": "New" }),
        )
        .await;
    // Another browser (a browser completes the sign-up it sent last).
    let mut other = Client::bound(&s).oneshot();
    let known = other
        .post(
            "/auth/signup",
            &json!({ "email": ALICE.0, "password": "a fine new password" }),
        )
        .await;
    assert_eq!((new.status, known.status), (202, 202));
    assert_eq!(new.body, known.body, "no enumeration through the answer");
    let cookie_names = |a: &Answer| -> Vec<String> {
        a.set_cookies()
            .iter()
            .map(|c| c.split('=').next().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(
        cookie_names(&new),
        cookie_names(&known),
        "nor through the cookies"
    );
    // The known address is told it has an account, with no code in the message.
    let notice = sink.wait_for(ALICE.0, 1).await;
    assert!(
        notice.raw.contains("You already have an account"),
        "{}",
        notice.raw
    );
    assert!(
        !notice
            .raw
            .lines()
            .any(|l| l.trim().len() == 6 && l.trim().bytes().all(|b| b.is_ascii_digit()))
    );
    // Weak passwords are refused before anything happens, whatever the address.
    for weak in ["short", "password123", "new2@example.com"] {
        let res = c
            .post(
                "/auth/signup",
                &json!({ "email": "new2@example.com", "password": weak }),
            )
            .await;
        assert_eq!((res.status, res.error()), (400, "weak_password"), "{weak}");
    }
    let code = sink.wait_for("new@example.com", 1).await.code();
    // A wrong guess is answered alike for both addresses (a code waits for each, the known
    // one's never mailed): no enumeration through /auth/signup/verify either.
    let wrong = "0".repeat(code.len());
    let wrong = if wrong == code {
        "1".repeat(code.len())
    } else {
        wrong
    };
    let guess_new = c
        .post(
            "/auth/signup/verify",
            &json!({ "email": "new@example.com", "code": wrong }),
        )
        .await;
    let guess_known = other
        .post(
            "/auth/signup/verify",
            &json!({ "email": ALICE.0, "code": wrong }),
        )
        .await;
    assert_eq!(
        (guess_new.status, &guess_new.body),
        (guess_known.status, &guess_known.body),
        "the same refusal"
    );
    assert_eq!(guess_new.error(), "invalid_code");
    assert!(
        s.state
            .store
            .user_by_email("new@example.com")
            .await
            .unwrap()
            .is_none()
    );
    // A sign-in code is not a sign-up code (and a sign-up code signs nobody in at /auth/otp).
    let res = c
        .post(
            "/auth/otp/verify",
            &json!({ "email": "new@example.com", "code": code }),
        )
        .await;
    assert_eq!(res.status, 401);
    let res = c
        .post(
            "/auth/signup/verify",
            &json!({ "email": "new@example.com", "code": code }),
        )
        .await;
    assert_eq!(res.status, 200, "{:?}", res.body);
    assert_eq!(res.body["token_type"], "DPoP", "bound to the page's key");
    let (_, claims) = jwt_parts(c.access.as_deref().unwrap());
    assert_eq!(claims["name"], "New");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(c.get("/api/me").await.status, 200);
    // The password chosen at sign-up is the password.
    assert_eq!(
        Client::new(&s)
            .login(("new@example.com", "a fine new password"))
            .await
            .status,
        200
    );
    // The code worked once.
    let res = c
        .post(
            "/auth/signup/verify",
            &json!({ "email": "new@example.com", "code": code }),
        )
        .await;
    assert_eq!(res.status, 401);
    s.stop().await;
}

/// Someone else signs the same address up while the owner's code is on its way: the owner's
/// code still creates the account with the owner's password (before, the second sign-up
/// replaced it, and its author signed in to the owner's new account). Only the browser that
/// sent a sign-up completes it, with any code of the address.
#[tokio::test]
async fn a_second_sign_up_of_the_address_cannot_set_the_password() {
    let sink = SmtpSink::start();
    let s = mail_server(&sink, |_| {}).await;
    let email = "victim@example.com";
    let mut owner = Client::bound(&s).oneshot();
    let mut attacker = Client::bound(&s).oneshot();
    let signup = |password: &'static str| json!({ "email": email, "password": password });
    assert_eq!(
        owner
            .post("/auth/signup", &signup("the owner's password"))
            .await
            .status,
        202
    );
    let owners_code = sink.wait_for(email, 1).await.code();
    assert_eq!(
        attacker
            .post("/auth/signup", &signup("the attacker's password"))
            .await
            .status,
        202
    );
    // The attacker's sign-up sent a code too, to the owner's mailbox.
    let attackers_code = sink.wait_for(email, 2).await.code();
    // Without the owner's browser, neither code creates anything (and none is spent).
    for code in [&owners_code, &attackers_code] {
        let mut stranger = Client::bound(&s).oneshot();
        let res = stranger
            .post(
                "/auth/signup/verify",
                &json!({ "email": email, "code": code }),
            )
            .await;
        assert_eq!(
            (res.status, res.error()),
            (401, "code_expired"),
            "{:?}",
            res.body
        );
    }
    // The owner enters the newest code in the mailbox (the attacker's): the owner's password.
    let res = owner
        .post(
            "/auth/signup/verify",
            &json!({ "email": email, "code": attackers_code }),
        )
        .await;
    assert_eq!(res.status, 200, "{:?}", res.body);
    assert_eq!(
        Client::new(&s)
            .login((email, "the attacker's password"))
            .await
            .status,
        401
    );
    assert_eq!(
        Client::new(&s)
            .login((email, "the owner's password"))
            .await
            .status,
        200
    );
    // The attacker's own browser, with the owner's first code: the address has an account now.
    let res = attacker
        .post(
            "/auth/signup/verify",
            &json!({ "email": email, "code": owners_code }),
        )
        .await;
    assert_ne!(res.status, 200, "{:?}", res.body);
    s.stop().await;
}

/// A second factor by emailed code, and an address whose code sends anyone spent (by asking
/// codes for it): the password's answer says no code was sent, instead of one that never comes.
#[tokio::test]
async fn a_second_factor_code_past_the_sends_is_said_not_sent() {
    let sink = SmtpSink::start();
    let s = mail_server(&sink, |_| {}).await;
    let mut tab = Client::bound(&s).oneshot();
    assert_eq!(tab.login(ALICE).await.status, 200);
    let on = json!({ "required": true });
    let a = tab.send("PUT", "/auth/second-factor", Some(&on)).await;
    assert_eq!(a.status, 204, "{}", a.body);
    let mut next = Client::bound(&s).oneshot();
    let a = next.login(ALICE).await;
    assert_eq!(
        (a.error(), &a.body["email_code"]),
        ("second_factor_required", &json!(true))
    );
    let mut stranger = Client::new(&s).oneshot();
    let mut spent = 0;
    while spent < 50
        && stranger
            .post("/auth/otp/start", &json!({ "email": ALICE.0 }))
            .await
            .status
            == 202
    {
        spent += 1;
    }
    assert!(spent < 50, "the sends are limited");
    let mut later = Client::bound(&s).oneshot();
    let a = later.login(ALICE).await;
    assert_eq!(
        (a.error(), &a.body["email_code"]),
        ("second_factor_required", &json!(false))
    );
    s.stop().await;
}

/// A reset signed by the key of a live session (a key opens one session, ever): refused before
/// the code is spent, the password changed or a session revoked; the same code then works
/// with a new key.
#[tokio::test]
async fn a_reset_with_a_key_already_bound_is_refused_before_anything_changes() {
    let sink = SmtpSink::start();
    let s = mail_server(&sink, |_| {}).await;
    let mut tab = Client::bound(&s).oneshot();
    assert_eq!(tab.login(ALICE).await.status, 200);
    let mut same_key = Client::new(&s).oneshot();
    same_key.key = tab.key.clone();
    same_key.fetch_nonce().await;
    same_key.request_reset(ALICE.0).await;
    let code = sink.wait_for(ALICE.0, 1).await.code();
    let reset =
        json!({ "email": ALICE.0, "code": code, "new_password": "brand new secret phrase" });
    let res = same_key.post("/auth/password/reset", &reset).await;
    assert_eq!(
        (res.status, res.error()),
        (401, "invalid_dpop_proof"),
        "{}",
        res.body
    );
    assert_eq!(tab.get("/api/me").await.status, 200, "no session revoked");
    assert_eq!(tab.refresh().await.status, 200);
    assert_eq!(
        Client::new(&s).login(ALICE).await.status,
        200,
        "the password unchanged"
    );
    let mut fresh = Client::bound(&s).oneshot();
    fresh.fetch_nonce().await;
    assert_eq!(
        fresh.post("/auth/password/reset", &reset).await.status,
        200,
        "the code unspent"
    );
    s.stop().await;
}

/// A reset with the right code that a busy hasher answers 503 gives its attempt back: the
/// user's retries spent the address's count of guesses (shared with sign-in and sign-up codes)
/// until the day's were gone, and the code's three tries, after which the right code was
/// refused.
#[tokio::test]
async fn a_reset_answered_busy_spends_none_of_the_address_s_guesses() {
    let sink = SmtpSink::start();
    let s = mail_server(&sink, |c| {
        c.argon2_concurrency = 1;
        c.argon2_queue = 0;
        c.otp.verifies_per_email = 2;
    })
    .await;
    let mut c = Client::bound(&s).oneshot();
    assert_eq!(c.request_reset(ALICE.0).await.status, 202);
    let code = sink.wait_for(ALICE.0, 1).await.code();
    let reset = json!({ "email": ALICE.0, "code": code, "new_password": "a brand new phrase 1" });
    let held = s.state.passwords.hasher.turn().await.unwrap();
    for _ in 0..4 {
        let res = c.post("/auth/password/reset", &reset).await;
        assert_eq!((res.status, res.error()), (503, "temporarily_unavailable"));
    }
    drop(held);
    let res = c.post("/auth/password/reset", &reset).await;
    assert_eq!(res.status, 200, "{}", res.body);
    s.stop().await;
}

#[tokio::test]
async fn a_reset_revokes_every_session_and_signs_the_caller_in() {
    let sink = SmtpSink::start();
    let s = mail_server(&sink, |_| {}).await;
    let mut tab = Client::bound(&s).oneshot();
    let mut laptop = Client::new(&s).oneshot();
    assert_eq!(tab.login(ALICE).await.status, 200);
    assert_eq!(laptop.login(ALICE).await.status, 200);
    let mut c = Client::bound(&s).oneshot();
    let known = c.request_reset(ALICE.0).await;
    let unknown = c
        .post(
            "/auth/password/reset/start",
            &json!({ "email": "nobody@example.com" }),
        )
        .await;
    assert_eq!((known.status, &known.body), (unknown.status, &unknown.body));
    let code = sink.wait_for(ALICE.0, 1).await.code();
    let weak = c
        .post(
            "/auth/password/reset",
            &json!({ "email": ALICE.0, "code": code, "new_password": "12345678" }),
        )
        .await;
    assert_eq!(weak.error(), "weak_password");
    let res = c
        .post(
            "/auth/password/reset",
            &json!({ "email": ALICE.0, "code": code, "new_password": "brand new secret phrase" }),
        )
        .await;
    assert_eq!(res.status, 200, "{:?}", res.body);
    assert_eq!(
        c.get("/api/me").await.status,
        200,
        "the caller is signed in"
    );
    for other in [&mut tab, &mut laptop] {
        assert_eq!(other.refresh().await.error(), "invalid_grant");
        assert_eq!(
            other.get("/api/me").await.status,
            401,
            "its token is refused at once"
        );
    }
    assert_eq!(
        Client::new(&s).login(ALICE).await.error(),
        "invalid_credentials"
    );
    assert_eq!(
        Client::new(&s)
            .login((ALICE.0, "brand new secret phrase"))
            .await
            .status,
        200
    );
    s.stop().await;
}

/// A reset or a password change leaves no code mailed before it able to sign in: one a stranger
/// read off a lock screen's preview opened a session after the owner reset the password to
/// lock them out. A change keeps the reset codes: whoever holds the password could otherwise
/// cancel the owner's reset by changing it again and again.
#[tokio::test]
async fn a_reset_or_a_change_revokes_the_codes_mailed_before_it() {
    let sink = SmtpSink::start();
    let s = mail_server(&sink, |_| {}).await;
    let mut stranger = Client::new(&s).oneshot();
    assert_eq!(stranger.request_code(ALICE.0).await.status, 202);
    let seen = sink.wait_for(ALICE.0, 1).await.code();
    let mut owner = Client::bound(&s).oneshot();
    owner.request_reset(ALICE.0).await;
    let code = sink.wait_for(ALICE.0, 2).await.code();
    let reset =
        json!({ "email": ALICE.0, "code": code, "new_password": "brand new secret phrase" });
    assert_eq!(owner.post("/auth/password/reset", &reset).await.status, 200);
    let notice = sink.wait_for(ALICE.0, 3).await;
    assert_eq!(notice.subject(), "Your password was reset");
    let refused = stranger.code_refused(ALICE.0, &seen).await;
    assert_eq!((refused.status, refused.error()), (401, "invalid_code"));
    // A sign-in code and the owner's reset code, mailed before a change (made by whoever holds
    // the password).
    assert_eq!(stranger.request_code(ALICE.0).await.status, 202);
    let seen = sink.wait_for(ALICE.0, 4).await.code();
    Client::new(&s).oneshot().request_reset(ALICE.0).await;
    let owners = sink.wait_for(ALICE.0, 5).await.code();
    let change = json!({ "current_password": "brand new secret phrase", "new_password": "another good phrase" });
    assert_eq!(
        owner.post("/auth/password/change", &change).await.status,
        204
    );
    let notice = sink.wait_for(ALICE.0, 6).await;
    assert_eq!(notice.subject(), "Your password was changed");
    let refused = stranger.code_refused(ALICE.0, &seen).await;
    assert_eq!((refused.status, refused.error()), (401, "invalid_code"));
    let reset =
        json!({ "email": ALICE.0, "code": owners, "new_password": "the owner's new phrase" });
    let res = Client::bound(&s)
        .oneshot()
        .post("/auth/password/reset", &reset)
        .await;
    assert_eq!(res.status, 200, "the owner's reset goes on: {}", res.body);
    assert_eq!(
        owner.get("/api/me").await.status,
        401,
        "the changer's session ended"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_password_change_keeps_this_session_and_ends_the_others() {
    let s = TestServer::start().await;
    let mut here = Client::bound(&s).oneshot();
    let mut there = Client::new(&s).oneshot();
    assert_eq!(here.login(ALICE).await.status, 200);
    assert_eq!(there.login(ALICE).await.status, 200);
    let change = |current: &'static str, new: &'static str| json!({ "current_password": current, "new_password": new });
    let res = here
        .post(
            "/auth/password/change",
            &change("wrong-password-1", "another good phrase"),
        )
        .await;
    // 403, not 401: a 401 would make a client refresh and replay (a second guess).
    assert_eq!((res.status, res.error()), (403, "invalid_credentials"));
    let res = here
        .post("/auth/password/change", &change(ALICE.1, "qwerty123"))
        .await;
    assert_eq!(res.error(), "weak_password");
    // Without the CSRF header (a form post from elsewhere): refused.
    let res = here
        .send_once(
            "POST",
            "/auth/password/change",
            Some(&change(ALICE.1, "another good phrase")),
            &[("x-tokenwarden", "0")],
        )
        .await;
    assert_eq!(res.status, 403);
    let res = here
        .post(
            "/auth/password/change",
            &change(ALICE.1, "another good phrase"),
        )
        .await;
    assert_eq!(res.status, 204, "{:?}", res.body);
    assert_eq!(here.refresh().await.status, 200, "this session goes on");
    assert_eq!(here.get("/api/me").await.status, 200);
    assert_eq!(there.refresh().await.error(), "invalid_grant");
    assert_eq!(
        Client::new(&s).login(ALICE).await.error(),
        "invalid_credentials"
    );
    assert_eq!(
        Client::new(&s)
            .login((ALICE.0, "another good phrase"))
            .await
            .status,
        200
    );
    s.stop().await;
}

#[tokio::test]
async fn a_required_verified_address_is_verified_by_an_emailed_code() {
    let sink = SmtpSink::start();
    let s = mail_server(&sink, |c| c.require_verified_email = true).await;
    let res = Client::new(&s).login(ALICE).await;
    assert_eq!((res.status, res.error()), (403, "email_not_verified"));
    // Not signed in: no browser made known to the account.
    assert!(res.set_cookies().is_empty(), "{:?}", res.set_cookies());
    // A wrong password says nothing about the address.
    assert_eq!(
        Client::new(&s)
            .login((ALICE.0, "wrong-password-1"))
            .await
            .error(),
        "invalid_credentials"
    );
    let mut c = Client::new(&s).oneshot();
    let known = c
        .post("/auth/email/verify/start", &json!({ "email": ALICE.0 }))
        .await;
    let unknown = c
        .post(
            "/auth/email/verify/start",
            &json!({ "email": "nobody@example.com" }),
        )
        .await;
    assert_eq!((known.status, &known.body), (unknown.status, &unknown.body));
    let code = sink.wait_for(ALICE.0, 1).await.code();
    let res = c
        .post(
            "/auth/email/verify",
            &json!({ "email": ALICE.0, "code": code }),
        )
        .await;
    assert_eq!(res.status, 204);
    assert_eq!(Client::new(&s).login(ALICE).await.status, 200);
    // Verified addresses get no further code.
    c.post("/auth/email/verify/start", &json!({ "email": ALICE.0 }))
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(sink.to(ALICE.0).len(), 1);
    s.stop().await;
}

/// The stranger of a pre-hijacked account (an old backend that vouched for neither the address
/// nor anything but its own id) is shut out when the address's owner signs in by a code, and
/// the old backend's word does not let them back in: its answer names the account's id, which
/// otherwise sets a password on an account that has none.
#[tokio::test]
async fn the_old_backend_does_not_give_back_a_password_the_addresses_owner_ended() {
    let sink = SmtpSink::start();
    let (s, _backend) = with_legacy_and_mail(&sink).await;
    let stranger = ("kept@legacy.test", "old-password-1");
    assert_eq!(Client::new(&s).oneshot().login(stranger).await.status, 200);
    let mut owner = Client::new(&s).oneshot();
    owner.request_code(stranger.0).await;
    let code = sink.wait_for(stranger.0, 1).await.code();
    assert_eq!(owner.verify_code(stranger.0, &code).await.status, 200);
    let again = Client::new(&s).oneshot().login(stranger).await;
    assert_eq!((again.status, again.error()), (401, "invalid_credentials"));
    assert_eq!(stored_hash(&s, stranger.0).await, "");
    s.stop().await;
}
