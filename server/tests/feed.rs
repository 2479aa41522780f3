//! What other services verify against: the discovery document, the JWKS with the next key
//! published before it signs, and the revocation feed (docs/PROTOCOL.md, "Verifying tokens in
//! other services"), over real HTTP on SQLite or PostgreSQL (`TW_TEST_BACKEND`).

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::*;
use serde_json::Value;
use tokenwarden_dpop::access::{self, Audience, KeySet};

const FEED_TOKEN: &str = "feed-token-0123456789abcdef0123456789";

/// A subscriber of the feed: the events it reads, one at a time.
struct Subscriber {
    res: reqwest::Response,
    buf: String,
}

#[derive(Debug, Clone, Default)]
struct SseEvent {
    event: String,
    id: Option<String>,
    data: Value,
}

impl Subscriber {
    async fn open(s: &TestServer, token: &str, last: Option<&str>) -> reqwest::Response {
        let mut req = s
            .http
            .get(s.url("/auth/revocations"))
            .header("authorization", format!("Bearer {token}"))
            .header("accept", "text/event-stream");
        if let Some(last) = last {
            req = req.header("last-event-id", last);
        }
        req.send().await.unwrap()
    }

    async fn connect(s: &TestServer, last: Option<&str>) -> Self {
        let res = Self::open(s, FEED_TOKEN, last).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        Subscriber {
            res,
            buf: String::new(),
        }
    }

    /// The next event (comments skipped), within 5 s.
    async fn next(&mut self) -> SseEvent {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut e = SseEvent::default();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        e.event = v.trim().into();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        e.id = Some(v.trim().into());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        e.data = serde_json::from_str(v.trim()).unwrap();
                    }
                }
                if !e.event.is_empty() {
                    return e;
                }
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.res.chunk())
                .await
                .expect("an event within 5 s")
                .unwrap()
                .expect("the stream goes on");
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Events up to and including `ready`.
    async fn until_ready(&mut self) -> (Vec<SseEvent>, SseEvent) {
        let mut before = Vec::new();
        loop {
            let e = self.next().await;
            if e.event == "ready" {
                return (before, e);
            }
            before.push(e);
        }
    }
}

fn with_feed(c: &mut tokenwarden_server::Settings) {
    c.revocation_feed_token = Some(FEED_TOKEN.into());
}

#[tokio::test]
async fn the_discovery_document_says_where_the_keys_and_the_feed_are() {
    let s = TestServer::with(with_feed).await;
    let res = s
        .http
        .get(s.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Its URLs come from the request's Host (no --public-origin): no cache may keep them.
    assert_eq!(res.headers()["cache-control"], "no-store");
    let doc: Value = res.json().await.unwrap();
    assert_eq!(doc["issuer"], "tokenwarden");
    assert_eq!(doc["tokenwarden_audience"], "tokenwarden-api");
    assert_eq!(doc["jwks_uri"], s.url("/.well-known/jwks.json"));
    assert_eq!(
        doc["dpop_signing_alg_values_supported"],
        serde_json::json!(["ES256", "EdDSA", "Ed25519"])
    );
    assert_eq!(
        doc["tokenwarden_revocations_endpoint"],
        s.url("/auth/revocations")
    );
    // Without a feed token there is no feed, and the document does not name one.
    let plain = TestServer::start().await;
    let doc: Value = plain
        .http
        .get(plain.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc.get("tokenwarden_revocations_endpoint").is_none());
    let res = Subscriber::open(&plain, FEED_TOKEN, None).await;
    assert_eq!(res.status(), 404);
    plain.stop().await;
    s.stop().await;
    // With --public-origin the document is the same for every request: cacheable.
    let s = TestServer::with(|c| c.public_origins = vec!["https://auth.example".into()]).await;
    let res = s
        .http
        .get(s.url("/.well-known/oauth-authorization-server"))
        .header("host", "attacker.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["cache-control"], "public, max-age=60");
    let doc: Value = res.json().await.unwrap();
    assert_eq!(
        doc["jwks_uri"],
        "https://auth.example/.well-known/jwks.json"
    );
    s.stop().await;
}

#[tokio::test]
async fn the_feed_needs_its_token_snapshots_then_streams_every_revocation_and_resumes() {
    let s = TestServer::with(with_feed).await;
    for wrong in ["", "feed-token-0123456789abcdef0123456788"] {
        assert_eq!(Subscriber::open(&s, wrong, None).await.status(), 401);
    }
    // A revocation before anyone subscribes: in the snapshot.
    let mut before = Client::new(&s).oneshot();
    let old = before.sign_in(ALICE).await;
    assert_eq!(before.logout().await.status, 204);
    let mut sub = Subscriber::connect(&s, None).await;
    let (snapshot, ready) = sub.until_ready().await;
    let ids: Vec<&str> = snapshot
        .iter()
        .filter_map(|e| e.data["id"].as_str())
        .collect();
    let (_, claims) = jwt_parts(&old.access);
    assert!(
        ids.contains(&claims["sid"].as_str().unwrap()),
        "{snapshot:?}"
    );
    assert!(
        ids.contains(&claims["jti"].as_str().unwrap()),
        "{snapshot:?}"
    );
    for e in &snapshot {
        assert_eq!(e.event, "revoked");
        assert!(e.data["until"].as_i64().unwrap() > s.state.now());
    }
    let cursor = ready.id.clone().unwrap();
    assert!(
        cursor.starts_with(&format!("{}.", ready.data["cursor"])),
        "{cursor} names the cursor, {}",
        ready.data
    );
    // With the server's time: a subscriber tells a stream held back on its way by the lag.
    let sent = ready.data["now"].as_i64().unwrap();
    assert!((s.state.now() - sent).abs() <= 1, "{}", ready.data);

    // Live: a logout and a session revoked by its user arrive within a second, with ids.
    let mut tab = Client::new(&s).oneshot();
    let t = tab.sign_in(BOB).await;
    let since = Instant::now();
    assert_eq!(tab.logout().await.status, 204);
    let (_, bob) = jwt_parts(&t.access);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let e = sub.next().await;
        assert_eq!(e.event, "revoked");
        assert!(e.id.is_some());
        seen.push((
            e.data["kind"].as_str().unwrap().to_owned(),
            e.data["id"].as_str().unwrap().to_owned(),
            e.id.unwrap(),
        ));
    }
    assert!(
        since.elapsed() < Duration::from_secs(1),
        "{:?}",
        since.elapsed()
    );
    let kinds: Vec<(&str, &str)> = seen
        .iter()
        .map(|(k, i, _)| (k.as_str(), i.as_str()))
        .collect();
    assert!(
        kinds.contains(&("token", bob["jti"].as_str().unwrap())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("session", bob["sid"].as_str().unwrap())),
        "{kinds:?}"
    );
    let last = seen.last().unwrap().2.clone();
    drop(sub);

    // A revocation while disconnected; the subscriber comes back with Last-Event-ID and gets
    // it (not the snapshot again).
    let mut other = Client::new(&s).oneshot();
    let t2 = other.sign_in(ALICE).await;
    let (_, alice2) = jwt_parts(&t2.access);
    let mut laptop = Client::new(&s).oneshot();
    laptop.sign_in(ALICE).await;
    let path = format!("/auth/sessions/{}", alice2["sid"].as_str().unwrap());
    assert_eq!(laptop.delete(&path).await.status, 204);
    let mut back = Subscriber::connect(&s, Some(&last)).await;
    let (missed, _) = back.until_ready().await;
    let missed: Vec<&str> = missed
        .iter()
        .filter_map(|e| e.data["id"].as_str())
        .collect();
    assert!(
        missed.contains(&alice2["sid"].as_str().unwrap()),
        "{missed:?}"
    );
    // Only what came after it (PostgreSQL also sends again the last 5 s of events whatever
    // their id: a transaction may commit an older id after a newer one was sent).
    if s.state.store.backend() == "sqlite" {
        assert!(
            !missed.contains(&claims["sid"].as_str().unwrap()),
            "only what came after it on a resume"
        );
    }
    drop(back);
    s.stop().await;
}

/// An instance that can no longer read the revocation events (its database unreachable: here,
/// closed under it) hears no revocation made elsewhere. It ends its subscribers' streams within
/// seconds instead of keeping them fresh with keepalives: they reconnect, maybe to another
/// instance, and a verifier that gets no `ready` back goes stale (and refuses, by default).
///
/// Its JWKS then answers 503: its list may lack a change made elsewhere (a revoked key), and a
/// verifier keeps what it fetches.
#[tokio::test]
async fn an_instance_that_cannot_read_the_events_lets_its_subscribers_go() {
    let s = TestServer::with(with_feed).await;
    assert_eq!(jwks_status(&s).await, 200);
    let mut sub = Subscriber::connect(&s, None).await;
    sub.until_ready().await;
    s.state.store.close().await;
    let since = Instant::now();
    // Keepalives would come every 15 s: the stream ends first.
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(10), sub.res.chunk())
        .await
        .expect("the stream ends within 10 s")
    {}
    assert!(since.elapsed() < Duration::from_secs(10));
    assert_eq!(jwks_status(&s).await, 503);
    s.stop().await;
}

/// An instance whose key ring cannot be re-read (a key it cannot open: sealed under another
/// key-encryption key, a corrupt row) may lack a change of the table's, a revoked key still in
/// its list: it answers the JWKS with 503 until a reload succeeds (and ends its feed's streams,
/// the same check).
#[tokio::test]
async fn an_instance_that_cannot_re_read_its_key_ring_answers_the_jwks_with_503() {
    let s = TestServer::with(with_feed_and_no_key_poll).await;
    let reload = || s.state.keys.reload(&s.state.store, s.state.now());
    assert_eq!(jwks_status(&s).await, 200);
    let row = s.state.store.keys().await.unwrap().remove(0);
    let store = &s.state.store;
    store.set_private_key(&row.kid, b"not a key").await.unwrap();
    assert!(reload().await.is_err());
    assert_eq!(jwks_status(&s).await, 503);
    store
        .set_private_key(&row.kid, &row.private_key)
        .await
        .unwrap();
    reload().await.unwrap();
    assert_eq!(jwks_status(&s).await, 200);
    s.stop().await;
}

/// An instance out of step sends a new subscriber nothing before it lets it go: it read and sent
/// the whole snapshot first, and its subscribers, back within seconds, had it do so again and
/// again.
#[tokio::test]
async fn an_instance_out_of_step_sends_a_new_subscriber_no_snapshot() {
    let s = TestServer::with(with_feed_and_no_key_poll).await;
    let mut tab = Client::new(&s).oneshot();
    tab.sign_in(ALICE).await;
    assert_eq!(tab.logout().await.status, 204);
    // In step: the logout is in the snapshot.
    let (before, _) = Subscriber::connect(&s, None).await.until_ready().await;
    assert!(before.iter().any(|e| e.event == "revoked"), "{before:?}");
    // Out of step: a key ring that cannot be re-read.
    let row = s.state.store.keys().await.unwrap().remove(0);
    s.state
        .store
        .set_private_key(&row.kid, b"not a key")
        .await
        .unwrap();
    assert!(
        s.state
            .keys
            .reload(&s.state.store, s.state.now())
            .await
            .is_err()
    );
    let mut sub = Subscriber::open(&s, FEED_TOKEN, None).await;
    let mut body = String::new();
    while let Ok(Some(chunk)) = tokio::time::timeout(Duration::from_secs(5), sub.chunk())
        .await
        .expect("the stream ends within 5 s")
    {
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        !body.contains("event: revoked") && !body.contains("event:revoked"),
        "{body}"
    );
    assert!(!body.contains("ready"), "{body}");
    s.stop().await;
}

/// A new subscriber's snapshot is read from the revocations that may still be in force only:
/// the table keeps events a day longer, and each connection read them all.
#[tokio::test]
async fn a_snapshot_reads_only_revocations_still_in_force() {
    let s = TestServer::with(with_feed).await;
    let store = &s.state.store;
    let now = s.state.now();
    let window = s.state.settings.access_ttl + s.state.settings.leeway;
    store
        .deny_token("ended-a-day-ago", now - 86_400)
        .await
        .unwrap();
    store.deny_token("in-force", now + 300).await.unwrap();
    let read: Vec<String> = store
        .revocation_snapshot(now - window)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.subject)
        .collect();
    assert_eq!(read, ["in-force"]);
    let (before, _) = Subscriber::connect(&s, None).await.until_ready().await;
    let subjects: Vec<&Value> = before.iter().map(|e| &e.data).collect();
    assert_eq!(before.len(), 1, "{subjects:?}");
    s.stop().await;
}

/// A subscriber back with the id of an event older than the snapshot's window (a token's
/// lifetime and the leeway) gets the snapshot, not every event since: the table keeps them two
/// days, and anyone with the service token could have had them all read in each request. Told
/// apart by a `keys` event after it: a resume sends it, a snapshot does not (a new subscriber
/// fetches the keys at `ready`).
#[tokio::test]
async fn a_resume_from_an_event_older_than_the_window_gets_the_snapshot() {
    use std::sync::atomic::Ordering::SeqCst;
    use tokenwarden_server::feed::event_id;
    let s = TestServer::with(with_feed).await;
    let store = &s.state.store;
    let now = s.state.now();
    let window = s.state.settings.access_ttl + s.state.settings.leeway;
    let latest = async || {
        let cursor = store.revocation_cursor().await.unwrap();
        event_id(&store.revocation_event(cursor).await.unwrap().unwrap())
    };
    store.deny_token("old", now - window - 1).await.unwrap();
    let old = latest().await;
    store.deny_token("recent", now).await.unwrap();
    let recent = latest().await;
    s.state.keys.rotate(store, now, 0).await.unwrap();
    let rotated = store.revocation_cursor().await.unwrap();
    until("the instance applies the key's event", &|| {
        s.state.fleet.cursor.load(SeqCst) >= rotated
    })
    .await;
    let keys_before_ready = async |last: &str| {
        let (before, _) = Subscriber::connect(&s, Some(last))
            .await
            .until_ready()
            .await;
        before.iter().filter(|e| e.event == "keys").count()
    };
    // (On PostgreSQL a resume also re-reads the last 5 s: the first key's event too.)
    assert!(keys_before_ready(&recent).await >= 1, "resumed");
    assert_eq!(keys_before_ready(&old).await, 0, "the snapshot");
    s.stop().await;
}

/// A `keys` event read from the table, by a subscriber that comes back with `Last-Event-ID` (or
/// one that fell behind), goes out only once this instance has re-read its key ring. The
/// subscriber fetches the JWKS on it and keeps what it gets, which before then still listed the
/// key the event revokes (only the verifier's second fetch, 6 s later, caught it). A new
/// subscriber, whose verifier fetched the keys at `ready` before the ring was re-read, gets
/// the event too once it is (it got none: events up to its cursor were taken as fetched).
#[tokio::test]
async fn a_resumed_subscriber_hears_of_a_revoked_key_once_this_instance_no_longer_lists_it() {
    let mut s = TestServer::with(with_feed).await;
    let mut tab = Client::new(&s).oneshot();
    let t = tab.sign_in(ALICE).await;
    assert_eq!(tab.logout().await.status, 204);
    let kid = jwt_parts(&t.access).0["kid"].as_str().unwrap().to_owned();
    let (_, ready) = Subscriber::connect(&s, None).await.until_ready().await;
    // This instance applies nothing meanwhile, and the CLI revokes the key: the server's ring
    // is not told.
    s.pause_fleet().await;
    let cli = tokenwarden_server::keys::Keys::new(
        s.state.settings.key_grace,
        s.state.settings.key_encryption.clone(),
    );
    let store = &s.state.store;
    let prior = store.revocation_cursor().await.unwrap();
    assert!(cli.revoke(store, &kid, s.state.now()).await.unwrap());
    let revoked = store.revocation_cursor().await.unwrap();
    // (Within the 5 s the instance stays in step without its task: else a 503.)
    assert_eq!(jwks_status(&s).await, 200);
    assert!(jwks_now(&s).await.contains(&kid), "the ring is as it was");
    let mut resumed = Subscriber::connect(&s, ready.id.as_deref()).await;
    let (before, _) = resumed.until_ready().await;
    let number = |e: &SseEvent| {
        let n = e.id.as_deref().and_then(|id| id.split_once('.'));
        n.and_then(|(n, _)| n.parse::<i64>().ok()).unwrap_or(0)
    };
    assert!(before.iter().all(|e| number(e) <= prior), "{before:?}");
    // A new one, whose verifier fetches the keys at `ready`, and gets them as they were.
    let mut new = Subscriber::connect(&s, None).await;
    new.until_ready().await;
    s.resume_fleet();
    // The CLI's events (a new signing key's, then the revocation's), each once this instance
    // has applied it; on PostgreSQL the catch-up re-reads the last 5 s: the logout's again.
    for sub in [&mut resumed, &mut new] {
        loop {
            let e = sub.next().await;
            if number(&e) <= prior {
                continue;
            }
            assert_eq!(e.event, "keys");
            if number(&e) == revoked {
                break;
            }
        }
    }
    assert!(!jwks_now(&s).await.contains(&kid));
    drop((resumed, new));
    s.stop().await;
}

/// A database restored from a backup gives the event numbers after the backup's to new events.
/// A subscriber that saw the lost ones and comes back with the id of one of them must not skip
/// the new events that took their numbers: its id names an event this database does not hold,
/// so it gets the snapshot.
#[tokio::test]
async fn a_subscriber_that_saw_events_a_restored_database_lost_gets_everything_again() {
    let (url, _dir) = TestServer::durable_database().await;
    let s = TestServer::on(&url, with_feed).await;
    let mut sub = Subscriber::connect(&s, None).await;
    let (_, ready) = sub.until_ready().await;
    let backup: i64 = ready.data["cursor"].as_i64().unwrap();
    // Revocations after the backup, seen by the subscriber.
    for _ in 0..2 {
        let mut tab = Client::new(&s).oneshot();
        tab.sign_in(ALICE).await;
        assert_eq!(tab.logout().await.status, 204);
    }
    let mut last = None;
    for _ in 0..4 {
        last = sub.next().await.id;
    }
    let last = last.unwrap();
    drop(sub);
    s.stop().await;

    // The restore: what came after the backup is gone, and its numbers are given again.
    let restore = [
        format!("DELETE FROM revocation_events WHERE id > {backup}"),
        match common::pg::backend() {
            common::pg::Backend::Sqlite => format!(
                "UPDATE sqlite_sequence SET seq = {backup} WHERE name = 'revocation_events'"
            ),
            common::pg::Backend::Postgres => format!(
                "SELECT setval(pg_get_serial_sequence('revocation_events', 'id'), {}, {})",
                backup.max(1),
                backup > 0
            ),
        },
    ];
    {
        use sqlx::Connection;
        let mut db = sqlx::AnyConnection::connect(&url).await.unwrap();
        for sql in &restore {
            sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
                .execute(&mut db)
                .await
                .unwrap();
        }
    }
    let s = TestServer::on(&url, with_feed).await;
    // New revocations take the lost numbers.
    let mut bob = Client::new(&s).oneshot();
    let t = bob.sign_in(BOB).await;
    assert_eq!(bob.logout().await.status, 204);
    let mut tab = Client::new(&s).oneshot();
    tab.sign_in(ALICE).await;
    assert_eq!(tab.logout().await.status, 204);
    let (_, claims) = jwt_parts(&t.access);
    if common::pg::backend() == common::pg::Backend::Postgres {
        // Bob's a minute earlier, so that PostgreSQL's resume does not send them again anyway
        // (it sends the 5 s of events before the one resumed from, whatever their number).
        use sqlx::Connection;
        let mut db = sqlx::AnyConnection::connect(&url).await.unwrap();
        sqlx::query(
            "UPDATE revocation_events SET recorded = recorded - interval '1 minute'
             WHERE subject IN ($1, $2)",
        )
        .bind(claims["sid"].as_str().unwrap())
        .bind(claims["jti"].as_str().unwrap())
        .execute(&mut db)
        .await
        .unwrap();
    }
    let mut back = Subscriber::connect(&s, Some(&last)).await;
    let (caught_up, _) = back.until_ready().await;
    let ids: Vec<&str> = caught_up
        .iter()
        .filter_map(|e| e.data["id"].as_str())
        .collect();
    assert!(
        ids.contains(&claims["sid"].as_str().unwrap()),
        "Bob's logout is not skipped: {ids:?} after {last}"
    );
    assert!(
        ids.contains(&claims["jti"].as_str().unwrap()),
        "{ids:?} after {last}"
    );
    drop(back);
    s.stop().await;
}

#[tokio::test]
async fn a_rotation_publishes_the_next_key_first_and_a_verifier_with_a_warm_cache_refuses_nothing()
{
    let s = TestServer::with(|c| {
        c.key_grace = 900;
        c.access_ttl = 60;
    })
    .await;
    s.state.clock.freeze();
    let jwks = |s: &TestServer| {
        let url = s.url("/.well-known/jwks.json");
        let http = s.http.clone();
        async move { http.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let audience = Audience {
        issuer: "tokenwarden".into(),
        audience: "tokenwarden-api".into(),
        leeway_secs: 5,
    };
    let mut c = Client::new(&s).oneshot();
    let t = c.sign_in(ALICE).await;
    let old_kid = jwt_parts(&t.access).0["kid"].as_str().unwrap().to_owned();
    // The next key: published now, signs in 120 s.
    let new_kid = s
        .state
        .keys
        .rotate(&s.state.store, s.state.now(), 120)
        .await
        .unwrap();
    // A verifier that fetched the JWKS now (and would keep it for max-age = 60 s) ...
    let cached = KeySet::from_jwks(&jwks(&s).await).unwrap();
    assert!(cached.contains(&new_kid) && cached.contains(&old_kid));
    // ... sees tokens signed by the old key until the new one signs, then by the new one, and
    // refuses none of them.
    let mut refused = 0;
    for step in 0..16 {
        let t = c.rotate(&c.refresh.clone().unwrap()).await;
        let kid = jwt_parts(&t.access).0["kid"].as_str().unwrap().to_owned();
        assert_eq!(
            &kid,
            if step < 12 { &old_kid } else { &new_kid },
            "step {step}"
        );
        if access::verify(&cached, &audience, &t.access, s.state.now()).is_err() {
            refused += 1;
        }
        s.state.clock.advance(10);
        s.state
            .keys
            .reload(&s.state.store, s.state.now())
            .await
            .unwrap();
    }
    assert_eq!(
        refused, 0,
        "a verifier with a warm cache refused tokens across the rotation"
    );
    // An emergency revocation stays immediate.
    let revoked = s
        .state
        .keys
        .revoke(&s.state.store, &new_kid, s.state.now())
        .await
        .unwrap();
    assert!(revoked);
    assert!(
        !KeySet::from_jwks(&jwks(&s).await)
            .unwrap()
            .contains(&new_kid)
    );
    s.stop().await;
}

/// A TCP relay to the server that the test can cut, as a proxy or a network would: the
/// connections through it end and new ones are refused.
struct Relay {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn to(s: &TestServer) -> Self {
        let target = s.base.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let mut pipes = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                pipes.spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        });
        Relay { url, task }
    }

    /// A relay that forwards the revocation feed's stream `delay` late, whole and in order (as
    /// something on the way could, TLS intact): from the moment a connection asks for the feed,
    /// what the server sends on it; other requests pass at once.
    async fn holding_back_the_feed(s: &TestServer, delay: Duration) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let target = s.base.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let ask = format!("GET {}", tokenwarden_server::feed::PATH);
        let task = tokio::spawn(async move {
            let mut pipes = tokio::task::JoinSet::new();
            while let Ok((inbound, _)) = listener.accept().await {
                let (target, ask) = (target.clone(), ask.clone());
                pipes.spawn(async move {
                    let Ok(out) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut from_client, mut to_client) = inbound.into_split();
                    let (mut from_server, mut to_server) = out.into_split();
                    let feed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                    let asked = feed.clone();
                    let up = async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                            if String::from_utf8_lossy(&buf[..n]).contains(&ask) {
                                asked.store(true, std::sync::atomic::Ordering::SeqCst);
                            }
                            if to_server.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    };
                    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                    let down = async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        while let Ok(n @ 1..) = from_server.read(&mut buf).await {
                            let late = feed.load(std::sync::atomic::Ordering::SeqCst);
                            let due = tokio::time::Instant::now()
                                + if late { delay } else { Duration::ZERO };
                            if tx.send((due, buf[..n].to_vec())).is_err() {
                                break;
                            }
                        }
                    };
                    let write = async move {
                        while let Some((due, bytes)) = rx.recv().await {
                            tokio::time::sleep_until(due).await;
                            if to_client.write_all(&bytes).await.is_err() {
                                break;
                            }
                        }
                    };
                    tokio::join!(up, down, write);
                });
            }
        });
        Relay { url, task }
    }

    /// Ends every connection through the relay (the JoinSet aborts its pipes) and refuses
    /// new ones.
    fn cut(&self) {
        self.task.abort();
    }
}

/// The nonce secret the auth server shares with the APIs of these tests.
const NONCE_SECRET: &str = "a nonce secret shared with the API 0123456789";

/// An auth server with a feed and a nonce secret shared with the APIs.
fn with_feed_and_secret(c: &mut tokenwarden_server::Settings) {
    with_feed(c);
    c.dpop_nonce_secret = Some(NONCE_SECRET.into());
}

/// How an API of these tests follows `s`: its origin, the shared secret, the feed's token, and
/// a view stale after `max_staleness`, then refused (`refuse`) or accepted.
fn api_options(
    s: &TestServer,
    max_staleness: Duration,
    refuse: bool,
) -> tokenwarden_dpop::feed::Options {
    tokenwarden_dpop::feed::Options {
        public_origins: vec![s.base.clone()],
        nonce_secret: Some(NONCE_SECRET.into()),
        revocation_token: Some(FEED_TOKEN.into()),
        stale: tokenwarden_dpop::feed::StalePolicy {
            max_staleness,
            refuse,
        },
        ..Default::default()
    }
}

/// The crate's secrets read from files with their newline: trimmed, as the auth server reads
/// them (the feed token made no header, so the feed never connected and every request was
/// refused as stale).
#[tokio::test]
async fn the_crate_trims_its_secrets_as_the_auth_server_reads_them() {
    let s = TestServer::with(with_feed_and_secret).await;
    let mut options = api_options(&s, Duration::from_secs(30), true);
    options.nonce_secret = Some(format!("{NONCE_SECRET}\n"));
    options.revocation_token = Some(format!("{FEED_TOKEN}\n"));
    let relay = Relay::to(&s).await;
    let rs = tokenwarden_dpop::feed::discover(&relay.url, options)
        .await
        .unwrap();
    until("the feed's snapshot", &|| {
        rs.revocations().staleness().is_some()
    })
    .await;
    relay.cut();
    s.stop().await;
}

/// What the API `rs` receives from a bound client for `GET /orders`: a proof with the API's
/// nonce (it refuses nonces issued before it started, the auth server's current one too).
fn api_request(
    rs: &tokenwarden_dpop::resource::ResourceServer,
    tab: &Client,
    t: &Tokens,
) -> axum::http::HeaderMap {
    let mut h = axum::http::HeaderMap::new();
    let mut tab = tab.clone();
    tab.nonce = Some(rs.current_nonce().to_string());
    let proof = tab.proof("GET", "/orders", Some(&t.access)).unwrap();
    h.insert(
        "authorization",
        format!("DPoP {}", t.access).parse().unwrap(),
    );
    h.insert("dpop", proof.parse().unwrap());
    h
}

#[tokio::test]
async fn the_crate_refuses_a_logged_out_token_within_a_second_and_states_what_a_cut_feed_does() {
    use tokenwarden_dpop::feed::discover;
    use tokenwarden_dpop::resource::AuthError;

    let s = TestServer::with(with_feed_and_secret).await;
    let relay = Relay::to(&s).await;
    // A fail-closed API allowing 5 s of staleness: from the feed's `ready` on, the open API's
    // discovery and the checks below must fit in it (the next keepalive is 15 s away).
    let api = |refuse: bool| discover(&relay.url, api_options(&s, Duration::from_secs(5), refuse));
    // Signed in first: a sign-in hashes a password, and on a loaded machine two of them could
    // outlast that staleness.
    let mut alice = Client::bound(&s).oneshot();
    let a = alice.sign_in(ALICE).await;
    let mut bob = Client::bound(&s).oneshot();
    let b = bob.sign_in(BOB).await;
    let (closed, open) = (api(true).await.unwrap(), api(false).await.unwrap());
    // Before the feed's snapshot, the fail-closed API refuses (it cannot know what is revoked).
    let deadline = Instant::now() + Duration::from_secs(5);
    while closed.revocations().staleness().is_none() || open.revocations().staleness().is_none() {
        assert!(
            Instant::now() < deadline,
            "no snapshot from the feed within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The keys were fetched past any shared cache (a CDN would keep a revoked key listed).
    let fetched = s
        .counts
        .jwks_fetches
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(fetched >= 2);
    assert_eq!(
        s.counts
            .jwks_fetches_no_cache
            .load(std::sync::atomic::Ordering::SeqCst),
        fetched
    );
    for rs in [&closed, &open] {
        let who = rs
            .authenticate("GET", "/orders", &api_request(rs, &alice, &a))
            .unwrap();
        assert_eq!(who.sub, jwt_parts(&a.access).1["sub"].as_str().unwrap());
    }

    // A logout: both APIs refuse the token within a second (the proof is new each time).
    assert_eq!(alice.logout().await.status, 204);
    let since = Instant::now();
    for rs in [&closed, &open] {
        loop {
            match rs.authenticate("GET", "/orders", &api_request(rs, &alice, &a)) {
                Err(AuthError::InvalidToken(_, why)) => {
                    assert_eq!(why, tokenwarden_dpop::resource::REVOKED);
                    break;
                }
                other => assert!(other.is_ok(), "{other:?}"),
            }
            assert!(since.elapsed() < Duration::from_secs(1), "still accepted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // The feed cut: past the allowed staleness, the fail-closed API answers 503, the
    // fail-open one goes on judging tokens on their signature and expiry.
    relay.cut();
    tokio::time::sleep(Duration::from_millis(5500)).await;
    assert!(matches!(
        closed.authenticate("GET", "/orders", &api_request(&closed, &bob, &b)),
        Err(AuthError::Unavailable)
    ));
    assert!(
        open.authenticate("GET", "/orders", &api_request(&open, &bob, &b))
            .is_ok()
    );
    let res = axum::response::IntoResponse::into_response(AuthError::Unavailable);
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "5");
}

#[tokio::test]
async fn the_crate_fetches_the_keys_again_for_an_unknown_kid_at_most_every_ten_seconds() {
    use tokenwarden_dpop::feed::{Options, discover};
    use tokenwarden_dpop::resource::AuthError;

    let s = TestServer::with(|c| c.dpop_nonce_secret = Some(NONCE_SECRET.into())).await;
    // No feed: the keys alone (their `keys` event would hide what this test looks at).
    let rs = discover(
        &s.base,
        Options {
            public_origins: vec![s.base.clone()],
            nonce_secret: Some(NONCE_SECRET.into()),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    // Its background task fetches the keys once more as it starts: let it.
    until("the background task's first fetch", &|| {
        s.counts
            .jwks_fetches
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 2
    })
    .await;
    let started = Instant::now();
    // A key the API has not seen signs from now on (published at once: no cache waited for).
    s.state.clock.advance(1);
    s.state
        .keys
        .rotate(&s.state.store, s.state.now(), 0)
        .await
        .unwrap();
    let mut tab = Client::bound(&s);
    let t = tab.sign_in(ALICE).await;
    let first = rs.authenticate("GET", "/orders", &api_request(&rs, &tab, &t));
    assert!(
        matches!(&first, Err(AuthError::InvalidToken(_, why)) if why.contains("unknown")),
        "{first:?}"
    );
    loop {
        match rs.authenticate("GET", "/orders", &api_request(&rs, &tab, &t)) {
            Ok(_) => break,
            Err(AuthError::InvalidToken(..)) => {}
            Err(e) => panic!("{e:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(12),
            "the new key never fetched"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Not before ten seconds after the last fetch (at start-up): a flood of unknown kids
    // costs the auth server one request per ten seconds.
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
    s.stop().await;
}

/// A `keys` event says the key ring changed (a key retired, perhaps revoked); if the JWKS
/// cannot be fetched then, the keys the API holds may still list the retired one. The
/// fail-closed API refuses (503) until a fetch succeeds, rather than judge tokens on that list;
/// once the JWKS answers again, the next connection's keys make it current.
#[tokio::test]
async fn the_crate_counts_as_stale_after_a_keys_event_whose_refetch_failed() {
    use std::sync::atomic::Ordering::SeqCst;

    let s = TestServer::with(with_feed_and_secret).await;
    let (alice, a, relay, rs) = alice_and_an_api(&s).await;
    let current = || rs.revocations().staleness().is_some();

    // The JWKS fails, then the key ring changes: the feed says so, the refetch fails.
    s.counts.jwks_down.store(true, SeqCst);
    a_refetch_fails(&s, &rs, &alice, &a).await;

    // The JWKS answers again: the reconnection fetches the keys, and its `ready` makes the view
    // current.
    s.counts.jwks_down.store(false, SeqCst);
    until("current again", &current).await;
    assert!(
        rs.authenticate("GET", "/orders", &api_request(&rs, &alice, &a))
            .is_ok()
    );
    relay.cut();
    s.stop().await;
}

/// `a`'s access token under a header naming a `kid` nobody has (anyone can send one): refused,
/// and the crate fetches the keys again for it.
fn unknown_kid(a: &Tokens) -> Tokens {
    Tokens {
        access: format!(
            "{}.{}",
            B64.encode(r#"{"alg":"EdDSA","typ":"at+jwt","kid":"nobody-has-it"}"#),
            a.access.split_once('.').unwrap().1
        ),
        refresh: String::new(),
    }
}

/// Waits (15 s at most) for a JWKS fetch after the `fetches` counted: the crate's for an
/// unknown `kid`, due 10 s after its last fetch.
async fn fetch_for_unknown_kid(s: &TestServer, fetches: u64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while s
        .counts
        .jwks_fetches
        .load(std::sync::atomic::Ordering::SeqCst)
        == fetches
    {
        assert!(Instant::now() < deadline, "no fetch for the unknown kid");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A slow JWKS (up to the crate's 10-second timeout: its cache, or something on the way slowing
/// it alone) and a token naming an unknown `kid` (anyone can send one): the fetch it asks for
/// is made beside the feed's reading, which goes on. Before, the feed went unread while the
/// fetch lasted, and a logout meanwhile was refused only when it ended.
#[tokio::test]
async fn a_slow_fetch_for_an_unknown_kid_does_not_hold_the_crate_s_feed_back() {
    use std::sync::atomic::Ordering::SeqCst;
    use tokenwarden_dpop::resource::AuthError;
    let s = TestServer::with(with_feed_and_secret).await;
    let (mut alice, a, relay, rs) = alice_and_an_api(&s).await;
    // The second fetch a `ready` asks for (6 s later) first, answered at once.
    let fetches = s.counts.jwks_fetches.load(SeqCst);
    until("the ready's second fetch", &|| {
        s.counts.jwks_fetches.load(SeqCst) > fetches
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fetches = s.counts.jwks_fetches.load(SeqCst);
    s.counts.jwks_latency_ms.store(4_000, SeqCst);
    assert!(matches!(
        rs.authenticate(
            "GET",
            "/orders",
            &api_request(&rs, &alice, &unknown_kid(&a))
        ),
        Err(AuthError::InvalidToken(..))
    ));
    // The fetch for it comes within 10 s of the last one, and answers 4 s later.
    fetch_for_unknown_kid(&s, fetches).await;
    assert_eq!(alice.logout().await.status, 204);
    let since = Instant::now();
    while rs
        .authenticate("GET", "/orders", &api_request(&rs, &alice, &a))
        .is_ok()
    {
        assert!(
            since.elapsed() < Duration::from_secs(1),
            "a logged-out token still accepted while the JWKS answers"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s.counts.jwks_latency_ms.store(0, SeqCst);
    relay.cut();
    s.stop().await;
}

/// Anyone can send a token naming a `kid` nobody has, and the crate then fetches the keys again
/// (at most every 10 s). When that fetch fails, the keys held go on verifying and the feed goes
/// on: it used to end the feed's connection, and with the JWKS still failing the reconnection
/// failed too, until the view went stale.
#[tokio::test]
async fn a_failed_fetch_for_an_unknown_kid_leaves_the_crate_s_feed_connected() {
    use std::sync::atomic::Ordering::SeqCst;
    use tokenwarden_dpop::resource::AuthError;
    let s = TestServer::with(with_feed_and_secret).await;
    let (mut alice, a, relay, rs) = alice_and_an_api(&s).await;
    let connections = s.counts.feed_connections.load(SeqCst);
    let fetches = s.counts.jwks_fetches.load(SeqCst);
    s.counts.jwks_down.store(true, SeqCst);
    assert!(matches!(
        rs.authenticate(
            "GET",
            "/orders",
            &api_request(&rs, &alice, &unknown_kid(&a))
        ),
        Err(AuthError::InvalidToken(..))
    ));
    // The fetch for it comes within 10 s of the connection.
    fetch_for_unknown_kid(&s, fetches).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        rs.authenticate("GET", "/orders", &api_request(&rs, &alice, &a))
            .is_ok()
    );
    // The feed still brings revocations: a logout is refused within a second.
    assert_eq!(alice.logout().await.status, 204);
    let since = Instant::now();
    while rs
        .authenticate("GET", "/orders", &api_request(&rs, &alice, &a))
        .is_ok()
    {
        assert!(
            since.elapsed() < Duration::from_secs(1),
            "a logged-out token still accepted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(s.counts.feed_connections.load(SeqCst), connections);
    relay.cut();
    s.stop().await;
}

/// The crate follows no redirect: an auth server (or something in front of it) whose metadata,
/// JWKS or feed answers with one is refused, so the keys come only from the URLs the crate
/// checked (`https://`, or this machine) and the service token goes nowhere else. The control:
/// the same server without the redirect.
#[tokio::test]
async fn the_crate_follows_no_redirect_for_the_metadata_the_keys_or_the_feed() {
    use axum::response::{IntoResponse, Redirect};
    use std::sync::{Arc, Mutex};
    use tokenwarden_dpop::feed::{DiscoverError, discover};

    let s = TestServer::with(with_feed_and_secret).await;
    let http = reqwest::Client::new();
    let get = async |url: String| http.get(url).send().await.unwrap().text().await.unwrap();
    let meta: Value =
        serde_json::from_str(&get(s.url("/.well-known/oauth-authorization-server")).await).unwrap();
    let jwks_uri = meta["jwks_uri"].as_str().unwrap().to_owned();
    let feed_uri = meta["tokenwarden_revocations_endpoint"]
        .as_str()
        .unwrap()
        .to_owned();
    let jwks = get(jwks_uri.clone()).await;
    // A server in front of the real one: it serves the metadata (naming its own JWKS and feed)
    // and the JWKS itself, except the one of the three it answers with a redirect to the real.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front = format!("http://{}", listener.local_addr().unwrap());
    let redirects: Arc<Mutex<&str>> = Arc::new(Mutex::new("metadata"));
    let (r, f, real_meta) = (
        redirects.clone(),
        front.clone(),
        s.url("/.well-known/oauth-authorization-server"),
    );
    let metadata = move || async move {
        if *r.lock().unwrap() == "metadata" {
            return Redirect::temporary(&real_meta).into_response();
        }
        let mut m = meta.clone();
        m["jwks_uri"] = Value::from(format!("{f}/jwks"));
        m["tokenwarden_revocations_endpoint"] = Value::from(format!("{f}/feed"));
        axum::Json(m).into_response()
    };
    let r = redirects.clone();
    let keys = move || async move {
        if *r.lock().unwrap() == "jwks" {
            return Redirect::temporary(&jwks_uri).into_response();
        }
        ([("content-type", "application/json")], jwks.clone()).into_response()
    };
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let a = asked.clone();
    let feed = move || async move {
        a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Redirect::temporary(&feed_uri)
    };
    let app = axum::Router::new()
        .route(
            "/.well-known/oauth-authorization-server",
            axum::routing::get(metadata),
        )
        .route("/jwks", axum::routing::get(keys))
        .route("/feed", axum::routing::get(feed));
    let serving = tokio::spawn(async move { axum::serve(listener, app).await });
    let options = || api_options(&s, Duration::from_secs(30), true);
    for what in ["metadata", "jwks"] {
        *redirects.lock().unwrap() = what;
        let refused = discover(&front, options()).await.err();
        assert!(
            matches!(&refused, Some(DiscoverError::AuthServer(m)) if m.contains("a redirect")),
            "{what}: {refused:?}"
        );
    }
    // The feed redirected: never followed, so the real feed never hears from the crate and
    // the view is never current. Its second ask (a reconnection) shows the first was over.
    *redirects.lock().unwrap() = "feed";
    let connections = s
        .counts
        .feed_connections
        .load(std::sync::atomic::Ordering::SeqCst);
    let rs = discover(&front, options()).await.unwrap();
    let since = Instant::now();
    while asked.load(std::sync::atomic::Ordering::SeqCst) < 2 && since.elapsed().as_secs() < 10 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        asked.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "asked the feed again"
    );
    assert_eq!(
        s.counts
            .feed_connections
            .load(std::sync::atomic::Ordering::SeqCst),
        connections,
        "the redirect was followed"
    );
    assert!(rs.revocations().staleness().is_none(), "current");
    drop(rs);
    // The control: the real server's metadata and keys, read.
    assert!(discover(&s.base, options()).await.is_ok());
    serving.abort();
    s.stop().await;
}

/// A metadata document or a JWKS over `MAX_DOCUMENT_BYTES` (1 MiB; something in front of the
/// auth server gone wrong, or hostile) is refused without being read whole: `discover` fails
/// and says why, and a JWKS refetch of that size leaves the view stale, as a failed one does.
/// The same documents padded within the cap are read as before.
#[tokio::test]
async fn the_crate_refuses_metadata_and_keys_over_a_mebibyte() {
    use std::sync::atomic::Ordering::SeqCst;
    use tokenwarden_dpop::feed::{DiscoverError, MAX_DOCUMENT_BYTES, discover};

    let s = TestServer::with(with_feed_and_secret).await;
    let mut alice = Client::bound(&s).oneshot();
    let a = alice.sign_in(ALICE).await;
    let relay = Relay::to(&s).await;
    let options = || api_options(&s, Duration::from_secs(30), true);

    // Its JSON and the padding together are over the cap.
    s.counts
        .documents_padding
        .store(MAX_DOCUMENT_BYTES as u64, SeqCst);
    let refused = discover(&relay.url, options()).await.err();
    assert!(
        matches!(&refused, Some(DiscoverError::AuthServer(m)) if m.contains("over 1048576 bytes")),
        "{refused:?}"
    );

    // 100 KiB of spaces after the JSON: within the cap, read as before.
    s.counts.documents_padding.store(100 * 1024, SeqCst);
    let rs = discover(&relay.url, options()).await.unwrap();
    let current = || rs.revocations().staleness().is_some();
    until("the feed's snapshot", &current).await;
    assert!(
        rs.authenticate("GET", "/orders", &api_request(&rs, &alice, &a))
            .is_ok()
    );

    // The key ring changes and the JWKS is over the cap: the refetch fails, the view is stale.
    s.counts
        .documents_padding
        .store(MAX_DOCUMENT_BYTES as u64, SeqCst);
    a_refetch_fails(&s, &rs, &alice, &a).await;
    relay.cut();
    s.stop().await;
}

/// The key ring changes while the JWKS cannot be read (a fault set by the caller): once the
/// feed's `keys` event has made `rs` try a refetch, its view is stale and `tab`'s request,
/// valid as it is, is refused as `Unavailable`.
async fn a_refetch_fails(
    s: &TestServer,
    rs: &tokenwarden_dpop::resource::ResourceServer,
    tab: &Client,
    t: &Tokens,
) {
    use std::sync::atomic::Ordering::SeqCst;
    use tokenwarden_dpop::resource::AuthError;
    let before = s.counts.jwks_fetches.load(SeqCst);
    s.state
        .keys
        .rotate(&s.state.store, s.state.now(), 0)
        .await
        .unwrap();
    until("the failed refetch", &|| {
        s.counts.jwks_fetches.load(SeqCst) > before
    })
    .await;
    until("stale", &|| rs.revocations().staleness().is_none()).await;
    assert!(matches!(
        rs.authenticate("GET", "/orders", &api_request(rs, tab, t)),
        Err(AuthError::Unavailable)
    ));
}

/// Alice signed in (a bound session), and an API following `s` through a relay that the test
/// cuts at the end (the server's stop would wait for an open feed), its view current and
/// Alice's token accepted.
async fn alice_and_an_api(
    s: &TestServer,
) -> (
    Client,
    Tokens,
    Relay,
    std::sync::Arc<tokenwarden_dpop::resource::ResourceServer>,
) {
    let mut alice = Client::bound(s).oneshot();
    let a = alice.sign_in(ALICE).await;
    let relay = Relay::to(s).await;
    let rs =
        tokenwarden_dpop::feed::discover(&relay.url, api_options(s, Duration::from_secs(30), true))
            .await
            .unwrap();
    until("the feed's snapshot", &|| {
        rs.revocations().staleness().is_some()
    })
    .await;
    assert!(
        rs.authenticate("GET", "/orders", &api_request(&rs, &alice, &a))
            .is_ok()
    );
    (alice, a, relay, rs)
}

/// `keys revoke` run by the CLI, another process: the serving instance learns of it from the
/// `keys` event, as the feed's subscribers do. The event reaches the feed only once this instance
/// serves the JWKS without the key, so a verifier that refetches on it refuses the key's tokens
/// within a second (not after keeping the old list for its 60 s). The key poll is an hour here:
/// the event alone must do it.
#[tokio::test]
async fn a_key_the_cli_revokes_is_refused_by_a_following_verifier_within_a_second() {
    let s = TestServer::with(with_feed_and_no_key_poll).await;
    let (alice, a, relay, rs) = alice_and_an_api(&s).await;
    // The CLI's own ring, as `keys revoke` makes it: the server's is not told.
    let kid = jwt_parts(&a.access).0["kid"].as_str().unwrap().to_owned();
    let cli = tokenwarden_server::keys::Keys::new(
        s.state.settings.key_grace,
        s.state.settings.key_encryption.clone(),
    );
    assert!(
        cli.revoke(&s.state.store, &kid, s.state.now())
            .await
            .unwrap()
    );
    refused_within(&rs, &alice, &a, Duration::from_secs(1)).await;
    relay.cut();
    s.stop().await;
}

/// Behind a load balancer, the instance that answers a verifier's refetch on a `keys` event may
/// not have heard the change yet: it serves the list that still holds the revoked key (here
/// every fetch in the half second after the revocation gets the JWKS as it was, an instance's
/// catch-up interval). The crate fetches once more `KEYS_AGAIN` later, so the key's tokens are
/// refused within seconds, not after its minute.
#[tokio::test]
async fn a_revoked_key_is_refused_after_a_lagging_instance_answered_the_refetch() {
    use std::sync::atomic::Ordering::SeqCst;
    use tokenwarden_dpop::feed::KEYS_AGAIN;
    let s = TestServer::with(with_feed_and_no_key_poll).await;
    let (alice, a, relay, rs) = alice_and_an_api(&s).await;
    let kid = jwt_parts(&a.access).0["kid"].as_str().unwrap().to_owned();
    let before = jwks_now(&s).await;
    assert!(before.contains(&kid));
    let lag = Instant::now() + Duration::from_millis(500);
    *s.counts.jwks_lagging.lock().unwrap() = Some((lag, u64::MAX, before));
    revoke(&s, &kid).await;
    until("the lagging instance's answer", &|| {
        s.counts.jwks_lagging_answers.load(SeqCst) > 0
    })
    .await;
    refused_within(&rs, &alice, &a, KEYS_AGAIN + Duration::from_secs(3)).await;
    assert!(
        Instant::now() > lag,
        "refused while every answer listed the key"
    );
    relay.cut();
    s.stop().await;
}

/// A key revoked after a verifier fetched the keys and before its feed connection's snapshot:
/// the snapshot holds no `keys` event, so the crate fetches the keys again at every `ready`
/// (here `discover`'s fetch and the one before connecting get the list as it was a moment
/// before the revocation: a connection the network slowed, up to its 45 s).
/// Otherwise the key's tokens were accepted for up to a minute.
#[tokio::test]
async fn a_key_revoked_before_the_snapshot_is_refused_from_the_ready_on() {
    use std::sync::atomic::Ordering::SeqCst;
    use tokenwarden_dpop::resource::AuthError;
    let s = TestServer::with(with_feed_and_no_key_poll).await;
    let mut alice = Client::bound(&s).oneshot();
    let a = alice.sign_in(ALICE).await;
    let kid = jwt_parts(&a.access).0["kid"].as_str().unwrap().to_owned();
    let before = jwks_now(&s).await;
    revoke(&s, &kid).await;
    let long = Instant::now() + Duration::from_secs(60);
    *s.counts.jwks_lagging.lock().unwrap() = Some((long, 2, before));
    let relay = Relay::to(&s).await;
    let rs = tokenwarden_dpop::feed::discover(
        &relay.url,
        api_options(&s, Duration::from_secs(30), true),
    )
    .await
    .unwrap();
    until("the feed's snapshot", &|| {
        rs.revocations().staleness().is_some()
    })
    .await;
    assert_eq!(s.counts.jwks_lagging_answers.load(SeqCst), 2);
    assert!(matches!(
        rs.authenticate("GET", "/orders", &api_request(&rs, &alice, &a)),
        Err(AuthError::InvalidToken(..))
    ));
    relay.cut();
    s.stop().await;
}

/// Something on the way between an API and the auth server holds the feed back (a relay that
/// forwards its stream 3 s late, whole and in order): its `ready` and keepalives say when the
/// auth server sent them, so the API's view is that much staler, refused past `max_staleness`
/// (1 s here), instead of current while every revocation arrives late.
#[tokio::test]
async fn a_feed_held_back_on_its_way_is_as_stale_as_it_is_late() {
    use tokenwarden_dpop::resource::AuthError;
    let s = TestServer::with(with_feed_and_secret).await;
    let mut alice = Client::bound(&s).oneshot();
    let a = alice.sign_in(ALICE).await;
    let relay = Relay::holding_back_the_feed(&s, Duration::from_secs(3)).await;
    let rs =
        tokenwarden_dpop::feed::discover(&relay.url, api_options(&s, Duration::from_secs(1), true))
            .await
            .unwrap();
    until("the feed's ready, 3 s late", &|| {
        rs.revocations().staleness().is_some()
    })
    .await;
    let stale = rs.revocations().staleness().unwrap();
    assert!(stale >= Duration::from_secs(1), "{stale:?}");
    assert!(matches!(
        rs.authenticate("GET", "/orders", &api_request(&rs, &alice, &a)),
        Err(AuthError::Unavailable)
    ));
    relay.cut();
    s.stop().await;
}

/// An auth server with a feed and a nonce secret shared with the APIs, whose key ring is
/// re-read on a `keys` event only (the poll an hour): the event alone must bring a change.
fn with_feed_and_no_key_poll(c: &mut tokenwarden_server::Settings) {
    with_feed_and_secret(c);
    c.key_poll_secs = 3600;
}

/// `kid` revoked by `s` itself (a `keys` event on its feed).
async fn revoke(s: &TestServer, kid: &str) {
    let revoked = s.state.keys.revoke(&s.state.store, kid, s.state.now());
    assert!(revoked.await.unwrap());
}

/// The status of `s`'s answer to a JWKS request.
async fn jwks_status(s: &TestServer) -> reqwest::StatusCode {
    let url = s.url(tokenwarden_server::api::JWKS_PATH);
    s.http.get(url).send().await.unwrap().status()
}

/// The JWKS `s` serves now.
async fn jwks_now(s: &TestServer) -> String {
    let url = s.url(tokenwarden_server::api::JWKS_PATH);
    s.http.get(url).send().await.unwrap().text().await.unwrap()
}

/// Polls until `rs` refuses `tab`'s token `t` as invalid (the key revoked), accepting it
/// meanwhile, within `limit`.
async fn refused_within(
    rs: &tokenwarden_dpop::resource::ResourceServer,
    tab: &Client,
    t: &Tokens,
    limit: Duration,
) {
    use tokenwarden_dpop::resource::AuthError;
    let since = Instant::now();
    loop {
        match rs.authenticate("GET", "/orders", &api_request(rs, tab, t)) {
            Err(AuthError::InvalidToken(..)) => return,
            other => assert!(other.is_ok(), "{other:?}"),
        }
        assert!(
            since.elapsed() < limit,
            "a token of the revoked key still accepted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `done` (without blocking the runtime the feed's task runs on) for 10 s at most.
async fn until(what: &str, done: &dyn Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
