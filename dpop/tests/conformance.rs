//! The conformance corpus (tests/conformance/corpus.json, format in its README) through the
//! crate's `resource::ResourceServer`: every case's status, error code and challenge. The Node
//! verifier (tests/verify/conformance.test.mjs) and the reference server run the same file.

#![cfg(feature = "axum")]

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::IntoResponse;
use serde_json::Value;
use tokenwarden_dpop::access::Audience;
use tokenwarden_dpop::resource::{AuthError, ResourceServer};

const ME: &str = "dpop-crate";

fn corpus() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/conformance/corpus.json"
    );
    let text = std::fs::read_to_string(path).expect("tests/conformance/corpus.json");
    serde_json::from_str(&text).expect("the corpus is JSON")
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

fn server(config: &Value, now: i64) -> ResourceServer {
    let origins: Vec<&str> = config["public_origins"]
        .as_array()
        .expect("public_origins")
        .iter()
        .map(|o| o.as_str().expect("origin"))
        .collect();
    ResourceServer::new(
        Audience {
            issuer: config["issuer"].as_str().expect("issuer").into(),
            audience: config["audience"].as_str().expect("audience").into(),
            leeway_secs: config["leeway_secs"].as_i64().expect("leeway_secs"),
        },
        config["nonce_secret"]
            .as_str()
            .expect("nonce_secret")
            .as_bytes(),
        &config["jwks"].to_string(),
    )
    .expect("the corpus's config is valid")
    .with_origins(&origins)
    .expect("origins")
    .require_dpop(!config["allow_bearer"].as_bool().unwrap_or(false))
    // The corpus's times are in the past: every nonce in its window counts (as the Node runner's
    // refuseNoncesBefore: 0).
    .refuse_nonces_before_ms(0)
    .with_clock(move || now)
}

struct Outcome {
    status: u16,
    error: Option<&'static str>,
    challenges: Vec<String>,
}

fn run(rs: &ResourceServer, request: &Value) -> Outcome {
    let mut headers = HeaderMap::new();
    for (name, value) in request["headers"].as_object().expect("headers") {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("header name");
        let values = match value {
            Value::Array(list) => list.clone(),
            v => vec![v.clone()],
        };
        for v in values {
            headers.append(
                name.clone(),
                HeaderValue::from_str(v.as_str().expect("header value")).expect("header value"),
            );
        }
    }
    let url = request["url"].as_str().expect("url");
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let method = request["method"].as_str().expect("method");
    match rs.authenticate(method, path, &headers) {
        Ok(_) => Outcome {
            status: 200,
            error: None,
            challenges: Vec::new(),
        },
        Err(e) => {
            let error = match &e {
                AuthError::MissingToken => "missing_token",
                AuthError::InvalidToken(..) => "invalid_token",
                AuthError::Proof(p) => p.code(),
                AuthError::Unavailable => "temporarily_unavailable",
            };
            let res = e.into_response();
            Outcome {
                status: res.status().as_u16(),
                error: Some(error),
                challenges: res
                    .headers()
                    .get_all(header::WWW_AUTHENTICATE)
                    .iter()
                    .map(|v| v.to_str().unwrap_or("").to_owned())
                    .collect(),
            }
        }
    }
}

#[test]
fn every_case_of_the_corpus_is_answered_as_expected() {
    let corpus = corpus();
    let cases = corpus["cases"].as_array().expect("cases");
    assert!(cases.len() >= 40, "the corpus has {} cases", cases.len());
    let (mut ran, mut skipped, mut failures) = (0, 0, Vec::new());
    for case in cases {
        let name = case["name"].as_str().expect("name");
        if case["skip"].get(ME).is_some() {
            skipped += 1;
            continue;
        }
        let revoked = case["revoked"].as_array().cloned().unwrap_or_default();
        if !revoked.is_empty() && cfg!(not(feature = "feed")) {
            skipped += 1; // the revocation list comes with the feature `feed`
            continue;
        }
        ran += 1;
        let now = case["now"].as_i64().expect("now");
        let rs = server(&config(&corpus, case), now);
        #[cfg(feature = "feed")]
        for r in &revoked {
            assert!(rs.revocations().apply(r, now), "{name}: revocation {r}");
        }
        for (i, earlier) in case["replay_before"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let o = run(&rs, earlier);
            if o.status != 200 {
                failures.push(format!(
                    "{name}: earlier request {i} got {} {:?}",
                    o.status, o.error
                ));
            }
        }
        let o = run(&rs, &case["request"]);
        let expect = &case["expect"];
        let status = expect["status"].as_u64().expect("status");
        let error = expect["error"].as_str();
        if u64::from(o.status) != status || o.error != error {
            failures.push(format!(
                "{name}: got {} {:?}, expected {status} {error:?}",
                o.status, o.error
            ));
            continue;
        }
        let joined = o.challenges.join("\n");
        for want in expect["challenge_contains"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let want = want.as_str().expect("challenge");
            if !joined.contains(want) {
                failures.push(format!("{name}: challenge {joined:?} lacks {want:?}"));
            }
        }
    }
    eprintln!("conformance ({ME}): {ran} cases run, {skipped} skipped (see their skip reasons)");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The axum extractor checks the proof against the path the client sent, also inside a router
/// nested under a prefix (which strips it from the request's URI): the corpus's valid bound
/// request (`GET /api/me`) passes at `/api` + `/me`, and its proof does not pass where the
/// stripped path would have matched it (`/x/api/me`, a route `/api/me` nested under `/x`).
#[tokio::test]
async fn the_extractor_checks_the_whole_path_inside_a_nested_router() {
    use axum::Router;
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use std::sync::Arc;
    use tokenwarden_dpop::resource::Authenticated;
    use tower::ServiceExt;

    let corpus = corpus();
    let case = corpus["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["name"] == "valid bound request")
        .expect("the case");
    let rs = Arc::new(server(
        &config(&corpus, case),
        case["now"].as_i64().expect("now"),
    ));
    let route = |path| Router::new().route(path, get(|_: Authenticated| async { "ok" }));
    let send = |app: Router, uri: &str| {
        let mut req = Request::builder().method("GET").uri(uri);
        for (name, value) in case["request"]["headers"].as_object().expect("headers") {
            req = req.header(name.as_str(), value.as_str().expect("value"));
        }
        app.oneshot(req.body(Body::empty()).expect("request"))
    };
    let nested = Router::new().nest("/api", route("/me")).with_state(rs);
    let res = send(nested, "/api/me").await.expect("answer");
    assert_eq!(res.status(), 200, "the proof names /api/me");
    // A fresh server (the proof's jti is used now); the path is /x/api/me.
    let rs = Arc::new(server(
        &config(&corpus, case),
        case["now"].as_i64().expect("now"),
    ));
    let other = Router::new().nest("/x", route("/api/me")).with_state(rs);
    let res = send(other, "/x/api/me").await.expect("answer");
    assert_eq!(
        res.status(),
        401,
        "a proof for /api/me is not one for /x/api/me"
    );
}
