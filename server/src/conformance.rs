//! The conformance corpus (tests/conformance/corpus.json, format in its README) through this
//! server's own verification: the `Authed` extractor (crate::access, crate::dpop) and the
//! nonce layer, as `/api/me` runs them, each case on a fresh store with the clock at its `now`.
//! The crate `tokenwarden-dpop` (dpop/tests/conformance.rs) and the Node verifier
//! (tests/verify/conformance.test.mjs) run the same file.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::FromRef;
use axum::http::{HeaderName, HeaderValue, Request, header};
use axum::middleware;
use serde_json::Value;
use tower::ServiceExt;

use crate::access::Access;
use crate::clock::Clock;
use crate::dpop::{Dpop, DpopSettings, add_nonce};
use crate::extract::Authed;
use crate::keys::Keys;
use crate::revoked::Revoked;
use crate::store::Store;
use crate::tokens::Audience;

const ME: &str = "server";

#[derive(Clone, FromRef)]
struct State {
    access: Access,
    dpop: Dpop,
}

fn corpus() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/conformance/corpus.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The corpus's config with the case's members over it.
fn config(corpus: &Value, case: &Value) -> Value {
    let mut c = corpus["config"].clone();
    if let Some(over) = case.get("config").and_then(Value::as_object) {
        for (k, v) in over {
            c[k] = v.clone();
        }
    }
    c
}

/// The protected route as the server mounts `/api/me`, for one case.
async fn app(config: &Value, case: &Value) -> Router {
    // The server started two minutes before the case (a nonce from before its start is
    // refused on a store of one instance), and its clock stands at the case's `now`.
    let now = case["now"].as_i64().unwrap();
    let clock = Clock::default();
    clock.freeze();
    clock.advance(now - 120 - clock.now());
    let store = Store::connect("sqlite::memory:").await.unwrap();
    let revoked = Arc::new(Revoked::new(&clock));
    for r in case["revoked"].as_array().into_iter().flatten() {
        let (id, until) = (
            r["id"].as_str().unwrap().to_owned(),
            r["until"].as_i64().unwrap(),
        );
        match r["kind"].as_str().unwrap() {
            "session" => revoked.revoke_session(id, until),
            "token" => revoked.deny_token(id, until),
            other => panic!("revocation kind {other}"),
        }
    }
    let audience = Audience {
        issuer: config["issuer"].as_str().unwrap().into(),
        audience: config["audience"].as_str().unwrap().into(),
        leeway_secs: config["leeway_secs"].as_i64().unwrap(),
    };
    let keys = Keys::verifying_only(&config["jwks"].to_string());
    let settings = DpopSettings {
        required: !config["allow_bearer"].as_bool().unwrap_or(false),
        nonce_secret: Some(config["nonce_secret"].as_str().unwrap().into()),
        public_origins: config["public_origins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| tokenwarden_dpop::normalize_origin(o.as_str().unwrap()).unwrap())
            .collect(),
        replay_capacity: None,
    };
    let kek = crate::kek::KeyEncryption::local(crate::kek::LocalKek::ephemeral());
    let dpop = Dpop::new(settings, store, clock.clone(), &kek)
        .await
        .unwrap();
    clock.advance(120);
    let state = State {
        access: Access::new(keys, audience, clock, revoked),
        dpop: dpop.clone(),
    };
    Router::new()
        .fallback(|Authed(_): Authed| async { "ok" })
        .layer(middleware::map_response_with_state(dpop, add_nonce))
        .with_state(state)
}

struct Outcome {
    status: u16,
    error: Option<String>,
    challenges: String,
    nonce: Option<String>,
}

async fn run(app: &Router, request: &Value) -> Outcome {
    let mut req = Request::builder()
        .method(request["method"].as_str().unwrap())
        .uri(request["url"].as_str().unwrap());
    for (name, value) in request["headers"].as_object().unwrap() {
        let values = match value {
            Value::Array(list) => list.clone(),
            v => vec![v.clone()],
        };
        for v in values {
            req = req.header(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(v.as_str().unwrap()).unwrap(),
            );
        }
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let challenges = res
        .headers()
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join("\n");
    let nonce = res
        .headers()
        .get("dpop-nonce")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .unwrap();
    let error = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned));
    Outcome {
        status,
        error,
        challenges,
        nonce,
    }
}

#[tokio::test]
async fn every_case_of_the_corpus_is_answered_as_expected() {
    let corpus = corpus();
    let cases = corpus["cases"].as_array().unwrap();
    assert!(cases.len() >= 40, "the corpus has {} cases", cases.len());
    let (mut ran, mut skipped, mut failures) = (0, 0, Vec::new());
    for case in cases {
        let name = case["name"].as_str().unwrap();
        if case["skip"].get(ME).is_some() {
            skipped += 1;
            continue;
        }
        ran += 1;
        let app = app(&config(&corpus, case), case).await;
        for (i, earlier) in case["replay_before"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let o = run(&app, earlier).await;
            if o.status != 200 {
                failures.push(format!(
                    "{name}: earlier request {i} got {} {:?}",
                    o.status, o.error
                ));
            }
        }
        let o = run(&app, &case["request"]).await;
        let expect = &case["expect"];
        let status = expect["status"].as_u64().unwrap();
        let error = expect["error"].as_str();
        if u64::from(o.status) != status || o.error.as_deref() != error {
            failures.push(format!(
                "{name}: got {} {:?}, expected {status} {error:?}",
                o.status, o.error
            ));
            continue;
        }
        for want in expect["challenge_contains"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let want = want.as_str().unwrap();
            if !o.challenges.contains(want) {
                failures.push(format!(
                    "{name}: challenge {:?} lacks {want:?}",
                    o.challenges
                ));
            }
        }
        if expect["dpop_nonce"].as_bool() == Some(true)
            && o.nonce.as_ref().is_none_or(|n| n.len() != 43)
        {
            failures.push(format!("{name}: no fresh DPoP-Nonce ({:?})", o.nonce));
        }
    }
    eprintln!("conformance ({ME}): {ran} cases run, {skipped} skipped");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
