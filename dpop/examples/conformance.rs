//! Writes the conformance corpus: one set of requests and the answers every implementation of
//! the resource-side rules must give (the crate's `resource::ResourceServer`, the Node verifier
//! `tokenwarden/verify`, the reference server). Format: tests/conformance/README.md.
//!
//! ```sh
//! cargo run -p tokenwarden-dpop --example conformance -- tests/conformance/corpus.json
//! ```
//!
//! The token key, the clock and the nonce secret are fixed; the proof key is new each run and
//! ECDSA signatures are randomised, so every run writes a different (equally valid) file. One
//! generated file is committed; the runners only read it.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use curve25519_dalek::Scalar;
use ed25519_dalek::{Signer, SigningKey};
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokenwarden_dpop::{Nonces, ProofSigner, ath, ed25519_thumbprint};

/// The fixed clock (unix seconds): 15 s into a 30-second nonce window.
const NOW: i64 = 1_800_000_015;
const ORIGIN: &str = "https://api.example.com";
const HOST: &str = "api.example.com";
const HTU: &str = "https://api.example.com/api/me";
const NONCE_SECRET: &str = "conformance-nonce-secret-0123456789abcdef";
const ISSUER: &str = "tokenwarden";
const AUDIENCE: &str = "tokenwarden-api";

/// Proofs' `jti`s: unique within the corpus.
static NEXT_JTI: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

#[derive(Serialize)]
struct Corpus {
    about: Vec<&'static str>,
    config: Config,
    cases: Vec<Case>,
}

#[derive(Serialize, Clone, Default)]
struct Config {
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    audience: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    leeway_secs: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    public_origins: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allow_bearer: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce_secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jwks: Option<Value>,
}

#[derive(Serialize, Clone)]
struct Request {
    method: String,
    url: String,
    headers: BTreeMap<String, Value>,
}

#[derive(Serialize)]
struct Revocation {
    kind: &'static str,
    id: String,
    until: i64,
}

#[derive(Serialize, Default)]
struct Expect {
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    challenge_contains: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    dpop_nonce: bool,
}

#[derive(Serialize)]
struct Case {
    name: String,
    now: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    config: Option<Config>,
    request: Request,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    replay_before: Vec<Request>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    revoked: Vec<Revocation>,
    /// Implementations that skip the case, and why (a known difference, stated).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    skip: BTreeMap<&'static str, &'static str>,
    expect: Expect,
}

struct Keys {
    token: SigningKey,
    other_token: SigningKey,
    kid: String,
    proof: ProofSigner,
    other_proof: ProofSigner,
    nonces: Nonces,
}

fn okp_thumbprint(key: &SigningKey) -> String {
    ed25519_thumbprint(&B64.encode(key.verifying_key().to_bytes()))
}

fn jws(header: &Value, claims: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let sig = sign(input.as_bytes());
    format!("{input}.{}", B64.encode(sig))
}

impl Keys {
    fn new() -> Self {
        let token = SigningKey::from_bytes(&[0x11; 32]);
        let kid = okp_thumbprint(&token);
        Keys {
            other_token: SigningKey::from_bytes(&[0x22; 32]),
            kid,
            token,
            proof: ProofSigner::generate(),
            other_proof: ProofSigner::generate(),
            nonces: Nonces::new(NONCE_SECRET.as_bytes()).expect("secret"),
        }
    }

    fn jwks(&self) -> Value {
        json!({ "keys": [{
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": self.kid,
            "x": B64.encode(self.token.verifying_key().to_bytes()),
        }] })
    }

    fn header(&self) -> Value {
        json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": self.kid })
    }

    /// The claims of a live token of `session-1`, bound to the proof key when `bound`.
    fn claims(&self, bound: bool) -> Value {
        let mut c = json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "sid": "session-1",
            "jti": "token-1", "iat": NOW - 60, "nbf": NOW - 60, "exp": NOW + 540,
            "email": "demo@tokenwarden.dev", "name": "Demo User", "roles": ["user"],
            "email_verified": true,
        });
        if bound {
            c["cnf"] = json!({ "jkt": self.proof.thumbprint() });
        }
        c
    }

    fn sign_token(&self, header: &Value, claims: &Value) -> String {
        jws(header, claims, |m| self.token.sign(m).to_bytes().to_vec())
    }

    fn token(&self, bound: bool) -> String {
        self.sign_token(&self.header(), &self.claims(bound))
    }

    fn token_with(&self, bound: bool, alter: impl Fn(&mut Value)) -> String {
        let mut c = self.claims(bound);
        alter(&mut c);
        self.sign_token(&self.header(), &c)
    }

    /// The nonce issued at `t_ms`.
    fn nonce_at(&self, t_ms: i64) -> String {
        self.nonces.issued_at(t_ms)
    }

    fn nonce(&self) -> String {
        self.nonces.current(NOW).to_string()
    }

    /// A proof's claims for `GET https://api.example.com/api/me` with `token`.
    fn proof_claims(&self, token: &str) -> Value {
        json!({
            "jti": format!("proof-{}", NEXT_JTI.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
            "htm": "GET", "htu": HTU, "iat": NOW, "ath": ath(token), "nonce": self.nonce(),
        })
    }

    fn proof(&self, token: &str) -> String {
        self.proof.sign_claims(&self.proof_claims(token))
    }

    fn proof_with(&self, token: &str, alter: impl Fn(&mut Value)) -> String {
        let mut c = self.proof_claims(token);
        alter(&mut c);
        if let Some(m) = c.as_object_mut() {
            m.retain(|_, v| !v.is_null());
        }
        self.proof.sign_claims(&c)
    }

    fn proof_header_with(&self, token: &str, alter: impl Fn(&mut Value)) -> String {
        let mut h = self.proof.header();
        alter(&mut h);
        self.proof.sign_with_header(&h, &self.proof_claims(token))
    }
}

/// The order L of Ed25519's prime-order group, little-endian.
const GROUP_ORDER: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// Every encoding of an Ed25519 point of small order (14): the eight points' canonical
/// encodings, `y + p` where it fits in 255 bits (y < 19), and, where x = 0, each of those
/// with the sign bit set.
fn small_order_encodings() -> Vec<[u8; 32]> {
    use curve25519_dalek::constants::EIGHT_TORSION;
    let mut all = Vec::new();
    for e in EIGHT_TORSION.iter().map(|p| p.compress().to_bytes()) {
        let mut these = vec![e];
        let y_below_19 = e[0] < 19 && e[1..31].iter().all(|b| *b == 0) && e[31] & 0x7f == 0;
        if y_below_19 {
            // p = 2^255 - 19: y + p is 0xed + y, then 0xff..., then 0x7f (and the sign bit).
            let mut n = [0xffu8; 32];
            n[0] = 0xed + e[0];
            n[31] = 0x7f | (e[31] & 0x80);
            these.push(n);
        }
        if e == one() || e == minus_one() {
            for n in these.clone() {
                let mut n = n;
                n[31] |= 0x80;
                these.push(n);
            }
        }
        all.extend(these);
    }
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 14, "every encoding of the eight points");
    all
}

/// The encodings of y = 1 (the identity) and y = p - 1 (the point of order 2), x = 0.
fn one() -> [u8; 32] {
    let mut e = [0u8; 32];
    e[0] = 1;
    e
}

fn minus_one() -> [u8; 32] {
    let mut e = [0xffu8; 32];
    e[0] = 0xec;
    e[31] = 0x7f;
    e
}

fn request(method: &str, url: &str, headers: &[(&str, Value)]) -> Request {
    let mut h = BTreeMap::new();
    h.insert("host".to_owned(), json!(HOST));
    for (k, v) in headers {
        if v.is_null() {
            h.remove(*k);
        } else {
            h.insert((*k).to_owned(), v.clone());
        }
    }
    Request {
        method: method.into(),
        url: url.into(),
        headers: h,
    }
}

/// `GET /api/me` with `Authorization: DPoP <token>` and `DPoP: <proof>`.
fn dpop(token: &str, proof: &str) -> Request {
    request(
        "GET",
        "/api/me",
        &[
            ("authorization", json!(format!("DPoP {token}"))),
            ("dpop", json!(proof)),
        ],
    )
}

fn bearer(token: &str) -> Request {
    request(
        "GET",
        "/api/me",
        &[("authorization", json!(format!("Bearer {token}")))],
    )
}

/// The DPoP challenge's start: the realm and every accepted algorithm.
static DPOP_REALM: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        r#"DPoP realm="tokenwarden", algs="{}""#,
        tokenwarden_dpop::ALGORITHMS.join(" ")
    )
});

fn ok() -> Expect {
    Expect {
        status: 200,
        ..Expect::default()
    }
}

fn missing_token() -> Expect {
    Expect {
        status: 401,
        error: Some("missing_token"),
        challenge_contains: vec![r#"Bearer realm="tokenwarden""#.into(), DPOP_REALM.clone()],
        ..Expect::default()
    }
}

/// `invalid_token` with the challenge of the scheme the token came with.
fn invalid_token(dpop_scheme: bool) -> Expect {
    let challenge = if dpop_scheme {
        format!(r#"{}, error="invalid_token""#, *DPOP_REALM)
    } else {
        r#"Bearer realm="tokenwarden", error="invalid_token""#.into()
    };
    Expect {
        status: 401,
        error: Some("invalid_token"),
        challenge_contains: vec![challenge],
        ..Expect::default()
    }
}

fn invalid_proof() -> Expect {
    Expect {
        status: 401,
        error: Some("invalid_dpop_proof"),
        challenge_contains: vec![format!(r#"{}, error="invalid_dpop_proof""#, *DPOP_REALM)],
        ..Expect::default()
    }
}

fn use_nonce() -> Expect {
    Expect {
        status: 401,
        error: Some("use_dpop_nonce"),
        challenge_contains: vec![format!(r#"{}, error="use_dpop_nonce""#, *DPOP_REALM)],
        dpop_nonce: true,
    }
}

struct Cases(Vec<Case>);

impl Cases {
    fn add(&mut self, name: &str, request: Request, expect: Expect) -> &mut Case {
        self.0.push(Case {
            name: name.into(),
            now: NOW,
            config: None,
            request,
            replay_before: Vec::new(),
            revoked: Vec::new(),
            skip: BTreeMap::new(),
            expect,
        });
        self.0.last_mut().expect("just pushed")
    }
}

impl Case {
    fn config(&mut self, c: Config) -> &mut Self {
        self.config = Some(c);
        self
    }
    #[allow(dead_code)] // no case is skipped today: every implementation answers every case
    fn skip(&mut self, implementation: &'static str, why: &'static str) -> &mut Self {
        self.skip.insert(implementation, why);
        self
    }
}

fn bearer_allowed() -> Config {
    Config {
        allow_bearer: Some(true),
        ..Config::default()
    }
}

fn host_origins() -> Config {
    Config {
        public_origins: Some(Vec::new()),
        ..Config::default()
    }
}

/// A change made to a header or to claims.
type Alter<'a> = Box<dyn Fn(&mut Value) + 'a>;

fn cases(k: &Keys) -> Vec<Case> {
    let mut c = Cases(Vec::new());
    let bound = k.token(true);
    let unbound = k.token(false);

    // The valid requests.
    c.add("valid bound request", dpop(&bound, &k.proof(&bound)), ok());
    c.add(
        "valid bound request, scheme in lower case",
        {
            let mut r = dpop(&bound, &k.proof(&bound));
            r.headers
                .insert("authorization".into(), json!(format!("dpop {bound}")));
            r
        },
        ok(),
    );
    c.add(
        "valid bound POST with a query string (htu without it)",
        {
            let p = k.proof_with(&bound, |c| {
                c["htm"] = json!("POST");
                c["htu"] = json!("https://api.example.com/api/orders");
            });
            let mut r = dpop(&bound, &p);
            r.method = "POST".into();
            r.url = "/api/orders?page=2".into();
            r
        },
        ok(),
    );
    c.add(
        "valid unbound Bearer token when Bearer is allowed",
        bearer(&unbound),
        ok(),
    )
    .config(bearer_allowed());
    c.add(
        "unbound Bearer token when Bearer is not allowed",
        bearer(&unbound),
        invalid_token(true),
    );

    // No or unusable Authorization.
    c.add(
        "no Authorization header",
        request("GET", "/api/me", &[]),
        missing_token(),
    );
    c.add(
        "Authorization: Basic",
        request(
            "GET",
            "/api/me",
            &[("authorization", json!("Basic dXNlcjpwdw=="))],
        ),
        missing_token(),
    );
    c.add(
        "Authorization: Bearer with an empty token",
        request("GET", "/api/me", &[("authorization", json!("Bearer "))]),
        missing_token(),
    );

    // The access token.
    let forged = jws(&k.header(), &k.claims(true), |m| {
        k.other_token.sign(m).to_bytes().to_vec()
    });
    c.add(
        "token signed by another key under the JWKS kid",
        dpop(&forged, &k.proof(&forged)),
        invalid_token(true),
    );
    let tampered = {
        let other = k.token_with(true, |c| c["sub"] = json!("admin"));
        let parts: Vec<&str> = bound.split('.').collect();
        format!(
            "{}.{}.{}",
            parts[0],
            other.split('.').nth(1).unwrap(),
            parts[2]
        )
    };
    c.add(
        "token with a changed payload",
        dpop(&tampered, &k.proof(&tampered)),
        invalid_token(true),
    );
    let none = format!(
        "{}.{}.",
        B64.encode(json!({"alg": "none", "typ": "at+jwt", "kid": k.kid}).to_string()),
        B64.encode(k.claims(true).to_string())
    );
    c.add(
        "token with alg none",
        dpop(&none, &k.proof(&none)),
        invalid_token(true),
    );
    let hs256 = jws(
        &json!({"alg": "HS256", "typ": "at+jwt", "kid": k.kid}),
        &k.claims(true),
        |m| {
            let mut mac = Hmac::<Sha256>::new_from_slice(&k.token.verifying_key().to_bytes())
                .expect("any key length");
            mac.update(m);
            mac.finalize().into_bytes().to_vec()
        },
    );
    c.add(
        "token with alg HS256 keyed with the public key",
        dpop(&hs256, &k.proof(&hs256)),
        invalid_token(true),
    );
    let es256 = k.proof.sign_with_header(
        &json!({"alg": "ES256", "typ": "at+jwt", "kid": k.kid}),
        &k.claims(true),
    );
    c.add(
        "token with alg ES256",
        dpop(&es256, &k.proof(&es256)),
        invalid_token(true),
    );
    for (name, header) in [
        (
            "token with typ JWT",
            json!({"alg": "EdDSA", "typ": "JWT", "kid": k.kid}),
        ),
        ("token without typ", json!({"alg": "EdDSA", "kid": k.kid})),
        (
            "token with an unknown kid",
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "no-such-key"}),
        ),
        (
            "token without kid",
            json!({"alg": "EdDSA", "typ": "at+jwt"}),
        ),
        // RFC 7515 §4.1.11: an extension the verifier does not know, marked critical, is
        // refused (signed by the auth server's own key: its tokens never carry one).
        (
            "token with crit",
            json!({"alg": "EdDSA", "typ": "at+jwt", "kid": k.kid, "crit": ["exp"], "exp": 1}),
        ),
    ] {
        let t = k.sign_token(&header, &k.claims(true));
        c.add(name, dpop(&t, &k.proof(&t)), invalid_token(true));
    }
    for (name, alter) in [
        (
            "token of another issuer",
            Box::new(|c: &mut Value| c["iss"] = json!("https://evil.example"))
                as Box<dyn Fn(&mut Value)>,
        ),
        (
            "token for another audience",
            Box::new(|c| c["aud"] = json!("another-api")),
        ),
        (
            "token with an audience array",
            Box::new(|c| c["aud"] = json!([AUDIENCE])),
        ),
        ("token without sub", Box::new(|c| c["sub"] = Value::Null)),
        (
            "token with a string exp",
            Box::new(|c| c["exp"] = json!("1800000555")),
        ),
        (
            "token expired (exp + leeway = now)",
            Box::new(|c| c["exp"] = json!(NOW - 5)),
        ),
        (
            "token not valid yet (nbf - leeway = now + 1)",
            Box::new(|c| c["nbf"] = json!(NOW + 6)),
        ),
        (
            "token with cnf but no jkt",
            Box::new(|c| c["cnf"] = json!({"x": 1})),
        ),
        // A time is a whole number both verifiers read alike (JavaScript's safe integers).
        (
            "token with an exp past 2^53",
            Box::new(|c| c["exp"] = json!(9_007_199_254_740_993_i64)),
        ),
        (
            "token with a fractional iat",
            Box::new(|c| c["iat"] = json!((NOW - 60) as f64 + 0.5)),
        ),
        // The auth server's claims, each of its type (its AccessClaims).
        (
            "token without email",
            Box::new(|c| c["email"] = Value::Null),
        ),
        ("token without name", Box::new(|c| c["name"] = Value::Null)),
        (
            "token with roles a string",
            Box::new(|c| c["roles"] = json!("admin")),
        ),
        (
            "token with email_verified a string",
            Box::new(|c| c["email_verified"] = json!("true")),
        ),
    ] {
        let t = k.token_with(true, |c| {
            alter(c);
            if let Some(m) = c.as_object_mut() {
                m.retain(|_, v| !v.is_null());
            }
        });
        c.add(name, dpop(&t, &k.proof(&t)), invalid_token(true));
    }
    // `null` is not absent: the auth server never writes one, and its typed claims take none.
    for member in ["roles", "email_verified"] {
        let t = k.token_with(true, |c| c[member] = Value::Null);
        c.add(
            &format!("token with {member} null"),
            dpop(&t, &k.proof(&t)),
            invalid_token(true),
        );
    }
    let t = k.token_with(true, |c| c["exp"] = json!((NOW + 540) as f64));
    c.add(
        "token with exp written as a whole float (1800000555.0)",
        dpop(&t, &k.proof(&t)),
        ok(),
    )
    .skip(
        "server",
        "the auth server reads its own tokens into its typed claims, whose times it writes as \
         integers: only its own key could sign this one",
    );
    let t = k.token_with(true, |c| c["exp"] = json!(NOW - 4));
    c.add(
        "token expired 4 s ago, within the 5 s leeway",
        dpop(&t, &k.proof(&t)),
        ok(),
    );
    let t = k.token_with(true, |c| c["nbf"] = json!(NOW + 5));
    c.add(
        "token valid in 5 s, within the leeway",
        dpop(&t, &k.proof(&t)),
        ok(),
    );
    let t = k.token_with(false, |c| c["exp"] = json!(NOW - 30));
    c.add(
        "expired Bearer token: a Bearer challenge",
        bearer(&t),
        invalid_token(false),
    )
    .config(bearer_allowed());
    for (name, claim) in [("token without sid", "sid"), ("token without jti", "jti")] {
        let t = k.token_with(true, |c| {
            c.as_object_mut().map(|m| m.remove(claim));
        });
        c.add(name, dpop(&t, &k.proof(&t)), invalid_token(true));
    }
    for (name, t) in [
        ("malformed token: one part", "abc".to_owned()),
        ("malformed token: two parts", "abc.def".to_owned()),
        ("malformed token: four parts", format!("{bound}.x")),
        ("malformed token: padded base64", format!("{}=", bound)),
        (
            "malformed token: header is not JSON",
            format!(
                "{}.{}",
                B64.encode("not json"),
                bound.split_once('.').unwrap().1
            ),
        ),
    ] {
        c.add(name, dpop(&t, &k.proof(&t)), invalid_token(true));
    }

    // Scheme and binding.
    c.add(
        "bound token sent as Bearer",
        bearer(&bound),
        invalid_token(true),
    );
    c.add(
        "bound token sent as Bearer when Bearer is allowed",
        bearer(&bound),
        invalid_token(true),
    )
    .config(bearer_allowed());
    c.add(
        "unbound token sent as DPoP with a valid proof",
        dpop(&unbound, &k.proof(&unbound)),
        invalid_token(true),
    )
    .config(bearer_allowed());

    // The proof, rule by rule (docs/PROTOCOL.md "The proof").
    c.add(
        "bound token without a DPoP header",
        request(
            "GET",
            "/api/me",
            &[("authorization", json!(format!("DPoP {bound}")))],
        ),
        invalid_proof(),
    );
    {
        let mut r = dpop(&bound, &k.proof(&bound));
        r.headers
            .insert("dpop".into(), json!([k.proof(&bound), k.proof(&bound)]));
        c.add("two DPoP headers, each valid", r, invalid_proof());
    }
    c.add("proof not a JWS", dpop(&bound, "x.y.z"), invalid_proof());
    // A request path with a dot segment: resolved, it would take a proof for /api/me to a
    // route the application may tell apart (`/x/:id/api/me`).
    // Absolute-form request targets too (`GET http://host/path`): their path as sent.
    for url in [
        "/x/%2e%2E/api/me",
        "/x/../api/me",
        "/api/./me",
        "http://api.example.com/x/%2e%2E/api/me",
        "http://api.example.com/x/../api/me",
    ] {
        let mut r = dpop(&bound, &k.proof(&bound));
        r.url = url.into();
        c.add(
            &format!("request path {url} with a proof for /api/me"),
            r,
            invalid_proof(),
        );
    }
    c.add(
        "proof claims a JSON array",
        dpop(
            &bound,
            &k.proof_with(&bound, |c| {
                *c = json!([c["jti"], c["htm"], c["htu"], c["iat"], c["ath"], c["nonce"]]);
            }),
        ),
        invalid_proof(),
    );
    c.add(
        "proof over 4096 bytes",
        dpop(
            &bound,
            &k.proof_with(&bound, |c| c["pad"] = json!("x".repeat(4100))),
        ),
        invalid_proof(),
    );
    let header_cases: Vec<(&str, Alter)> = vec![
        // Its members in order as a JSON array: what a derived deserializer would take.
        (
            "proof header a JSON array",
            Box::new(|h| *h = json!([h["typ"], h["alg"], h["jwk"], null])),
        ),
        ("proof typ JWT", Box::new(|h| h["typ"] = json!("JWT"))),
        (
            "proof typ in upper case",
            Box::new(|h| h["typ"] = json!("DPOP+JWT")),
        ),
        (
            "proof without typ",
            Box::new(|h| {
                h.as_object_mut().map(|m| m.remove("typ"));
            }),
        ),
        ("proof alg none", Box::new(|h| h["alg"] = json!("none"))),
        ("proof alg HS256", Box::new(|h| h["alg"] = json!("HS256"))),
        ("proof alg ES384", Box::new(|h| h["alg"] = json!("ES384"))),
        ("proof alg EdDSA", Box::new(|h| h["alg"] = json!("EdDSA"))),
        ("proof with crit", Box::new(|h| h["crit"] = json!(["exp"]))),
        (
            "proof without jwk",
            Box::new(|h| {
                h.as_object_mut().map(|m| m.remove("jwk"));
            }),
        ),
        (
            "proof jwk with a private member d",
            Box::new(|h| h["jwk"]["d"] = json!("AAAA")),
        ),
        (
            "proof jwk symmetric",
            Box::new(|h| h["jwk"] = json!({"kty": "oct", "k": "c2VjcmV0"})),
        ),
        (
            "proof jwk on P-384",
            Box::new(|h| h["jwk"]["crv"] = json!("P-384")),
        ),
        (
            "proof jwk with a short x",
            Box::new(|h| h["jwk"]["x"] = json!("AAAA")),
        ),
        (
            "proof jwk off the curve (x and y swapped)",
            Box::new(|h| {
                let x = h["jwk"]["x"].clone();
                h["jwk"]["x"] = h["jwk"]["y"].clone();
                h["jwk"]["y"] = x;
            }),
        ),
        (
            "proof jwk with WebCrypto's extra members (accepted)",
            Box::new(|h| {
                h["jwk"]["ext"] = json!(true);
                h["jwk"]["key_ops"] = json!(["verify"]);
            }),
        ),
    ];
    for (name, alter) in header_cases {
        let expect = if name.ends_with("(accepted)") {
            ok()
        } else {
            invalid_proof()
        };
        c.add(
            name,
            dpop(&bound, &k.proof_header_with(&bound, alter)),
            expect,
        );
    }
    let forged_sig = k
        .other_proof
        .sign_with_header(&k.proof.header(), &k.proof_claims(&bound));
    c.add(
        "proof signed by another key than its jwk",
        dpop(&bound, &forged_sig),
        invalid_proof(),
    );
    // EdDSA: a proof by an Ed25519 key, of a token bound to that key.
    let ed = ProofSigner::generate_ed25519();
    let ed_bound = k.token_with(true, |c| c["cnf"]["jkt"] = json!(ed.thumbprint()));
    let ed_proof = |alter: &dyn Fn(&mut Value)| {
        let mut h = ed.header();
        alter(&mut h);
        ed.sign_with_header(&h, &k.proof_claims(&ed_bound))
    };
    c.add(
        "EdDSA proof by an Ed25519 key (accepted)",
        dpop(&ed_bound, &ed_proof(&|_| {})),
        ok(),
    );
    c.add(
        "Ed25519 proof, RFC 9864's name for EdDSA (accepted)",
        dpop(&ed_bound, &ed_proof(&|h| h["alg"] = json!("Ed25519"))),
        ok(),
    );
    c.add(
        "EdDSA proof with alg in lower case",
        dpop(&ed_bound, &ed_proof(&|h| h["alg"] = json!("eddsa"))),
        invalid_proof(),
    );
    c.add(
        "EdDSA proof whose header says Ed448",
        dpop(&ed_bound, &ed_proof(&|h| h["alg"] = json!("Ed448"))),
        invalid_proof(),
    );
    c.add(
        "EdDSA proof whose header says ES256",
        dpop(&ed_bound, &ed_proof(&|h| h["alg"] = json!("ES256"))),
        invalid_proof(),
    );
    c.add(
        "EdDSA proof with crv X25519",
        dpop(&ed_bound, &ed_proof(&|h| h["jwk"]["crv"] = json!("X25519"))),
        invalid_proof(),
    );
    c.add(
        "EdDSA proof by the Ed25519 key of an ES256 session",
        dpop(&bound, &ed_proof(&|_| {})),
        invalid_proof(),
    );
    {
        // S + L (the group order): the same signature to a lax verifier.
        let proof = ed_proof(&|_| {});
        let (signed, sig) = proof.rsplit_once('.').unwrap();
        let mut sig = B64.decode(sig).unwrap();
        let mut carry = 0u16;
        for (b, l) in sig[32..].iter_mut().zip(GROUP_ORDER) {
            let sum = u16::from(*b) + u16::from(l) + carry;
            *b = sum as u8;
            carry = sum >> 8;
        }
        c.add(
            "EdDSA proof with a non-canonical S (S + L)",
            dpop(&ed_bound, &format!("{signed}.{}", B64.encode(sig))),
            invalid_proof(),
        );
    }
    {
        // R the identity and S = k·a: valid to a cofactorless verifier, refused by a strict one.
        // Only the key's owner can make it; every verifier answers it alike.
        let owner = SigningKey::from_bytes(&[0x33; 32]);
        let x = B64.encode(owner.verifying_key().to_bytes());
        let token = k.token_with(true, |c| c["cnf"]["jkt"] = json!(okp_thumbprint(&owner)));
        let header = json!({"typ": "dpop+jwt", "alg": "EdDSA",
            "jwk": {"kty": "OKP", "crv": "Ed25519", "x": x}});
        let proof = jws(&header, &k.proof_claims(&token), |m| identity_r(&owner, m));
        c.add(
            "EdDSA proof with R of small order (the identity)",
            dpop(&token, &proof),
            invalid_proof(),
        );
        // The same with the identity encoded otherwise: y = p + 1, and x = 0 with its sign bit
        // (a verifier that decodes such encodings, as ZIP 215 does, takes both).
        let mut p_plus_1 = [0xffu8; 32];
        p_plus_1[0] = 0xee;
        p_plus_1[31] = 0x7f;
        let mut minus_zero = [0u8; 32];
        minus_zero[0] = 1;
        minus_zero[31] = 0x80;
        for (what, r) in [
            ("y = p + 1", p_plus_1),
            ("x = 0 with its sign bit", minus_zero),
        ] {
            let proof = jws(&header, &k.proof_claims(&token), |m| {
                encoded_r(&owner, m, r)
            });
            c.add(
                &format!("EdDSA proof with R the identity encoded otherwise ({what})"),
                dpop(&token, &proof),
                invalid_proof(),
            );
        }
    }
    {
        // A jwk x that is no point at all (y = 2 has no x on the curve), canonical and of no
        // small order by its bytes: refused when the signature is checked.
        let mut y2 = [0u8; 32];
        y2[0] = 2;
        assert!(
            curve25519_dalek::edwards::CompressedEdwardsY(y2)
                .decompress()
                .is_none()
        );
        let x = B64.encode(y2);
        let token = k.token_with(true, |c| c["cnf"]["jkt"] = json!(ed25519_thumbprint(&x)));
        let header = json!({"typ": "dpop+jwt", "alg": "EdDSA",
            "jwk": {"kty": "OKP", "crv": "Ed25519", "x": x}});
        let proof = jws(&header, &k.proof_claims(&token), |_| vec![7u8; 64]);
        c.add(
            "EdDSA proof by a jwk x that is no point (y = 2)",
            dpop(&token, &proof),
            invalid_proof(),
        );
    }
    // A key of small order: a "signature" that a cofactorless verifier accepts for every
    // message whose hash is a multiple of the key's order (every message for the identity),
    // made without any private key: anyone could make proofs for a token bound to such a key.
    for (i, weak) in small_order_encodings().iter().enumerate() {
        let x = B64.encode(weak);
        let jkt = ed25519_thumbprint(&x);
        let token = k.token_with(true, |c| c["cnf"]["jkt"] = json!(jkt));
        let header = json!({"typ": "dpop+jwt", "alg": "EdDSA",
            "jwk": {"kty": "OKP", "crv": "Ed25519", "x": x}});
        let proof = forge_under(weak, "a proof", |_, sig| {
            jws(&header, &k.proof_claims(&token), |_| sig.to_vec())
        });
        c.add(
            &format!("EdDSA proof by a key of small order ({i}: {x})"),
            dpop(&token, &proof),
            invalid_proof(),
        );
    }
    {
        // The token's signature with R the identity and S = k·a, by the token key itself: a
        // cofactorless verifier takes it, a strict one refuses it; every implementation alike.
        let token = jws(&k.header(), &k.claims(false), |m| identity_r(&k.token, m));
        c.add(
            "token whose signature's R is of small order (the identity)",
            bearer(&token),
            invalid_token(false),
        )
        .config(bearer_allowed());
    }
    // The same for the token's key: a JWKS that lists a key of small order (a placeholder, a
    // JWKS fetched over plain http) lets anyone sign any token under its kid for a cofactorless
    // verifier (OpenSSL's, under the Node verifier): refused, as by the crate's strict check.
    for (i, weak) in small_order_encodings().iter().enumerate() {
        let x = B64.encode(weak);
        let mut jwks = k.jwks();
        jwks["keys"].as_array_mut().unwrap().push(
            json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": "weak", "x": x}),
        );
        let header = json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": "weak" });
        let token = forge_under(weak, "a token", |n, sig| {
            let mut claims = k.claims(false);
            claims["jti"] = json!(format!("weak-{n}"));
            jws(&header, &claims, |_| sig.to_vec())
        });
        c.add(
            &format!("token under a JWKS key of small order ({i}: {x})"),
            bearer(&token),
            invalid_token(false),
        )
        .config(Config {
            jwks: Some(jwks),
            ..bearer_allowed()
        });
    }
    // A JWKS entry that is no public signing key of ours: one carrying its private half (a
    // private JWK pasted into the JWKS: anyone can sign with it), one whose `alg` or `use` is
    // there but not a string (both verifiers read such a member as set, and not to ours). The
    // token is signed by that entry's key: every verifier must refuse it as under no key.
    let x = B64.encode(k.other_token.verifying_key().to_bytes());
    let d = B64.encode(k.other_token.to_bytes());
    let base = json!({"kty": "OKP", "crv": "Ed25519", "kid": "odd", "x": x});
    for (what, member, value) in [
        ("its private key (d)", "d", json!(d)),
        ("alg null", "alg", Value::Null),
        ("alg [\"EdDSA\"]", "alg", json!(["EdDSA"])),
        ("use 1", "use", json!(1)),
    ] {
        let mut entry = base.clone();
        entry[member] = value;
        let mut jwks = k.jwks();
        jwks["keys"].as_array_mut().unwrap().push(entry);
        let header = json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": "odd" });
        let token = jws(&header, &k.claims(false), |m| {
            k.other_token.sign(m).to_bytes().to_vec()
        });
        c.add(
            &format!("token under a JWKS entry with {what}"),
            bearer(&token),
            invalid_token(false),
        )
        .config(Config {
            jwks: Some(jwks),
            ..bearer_allowed()
        });
    }
    let good = k.proof(&bound);
    let signed = good.rsplit_once('.').unwrap().0;
    c.add(
        "proof with a 3-byte signature",
        dpop(&bound, &format!("{signed}.AAAA")),
        invalid_proof(),
    );
    c.add(
        "proof with an all-zero signature",
        dpop(&bound, &format!("{signed}.{}", B64.encode([0u8; 64]))),
        invalid_proof(),
    );
    let claim_cases: Vec<(&str, Alter, Expect)> = vec![
        (
            "proof without jti",
            Box::new(|c| c["jti"] = Value::Null),
            invalid_proof(),
        ),
        (
            "proof with an empty jti",
            Box::new(|c| c["jti"] = json!("")),
            invalid_proof(),
        ),
        (
            "proof with a 129-character jti",
            Box::new(|c| c["jti"] = json!("j".repeat(129))),
            invalid_proof(),
        ),
        (
            "proof with a 128-character jti",
            Box::new(|c| c["jti"] = json!("j".repeat(128))),
            ok(),
        ),
        (
            "proof with a numeric jti",
            Box::new(|c| c["jti"] = json!(5)),
            invalid_proof(),
        ),
        (
            "proof without htm",
            Box::new(|c| c["htm"] = Value::Null),
            invalid_proof(),
        ),
        (
            "proof without htu",
            Box::new(|c| c["htu"] = Value::Null),
            invalid_proof(),
        ),
        (
            "proof without iat",
            Box::new(|c| c["iat"] = Value::Null),
            invalid_proof(),
        ),
        (
            "proof with a string iat",
            Box::new(|c| c["iat"] = json!(NOW.to_string())),
            invalid_proof(),
        ),
        // Beyond 1e15, however written: JavaScript reads `1e16`, `10000000000000000` and
        // 2^63 − 1 (rounded) alike.
        (
            "proof with an iat of 10^16",
            Box::new(|c| c["iat"] = json!(10_000_000_000_000_000_i64)),
            invalid_proof(),
        ),
        (
            "proof with an iat of 2^63 - 1",
            Box::new(|c| c["iat"] = json!(i64::MAX)),
            invalid_proof(),
        ),
        (
            "proof htm POST for a GET",
            Box::new(|c| c["htm"] = json!("POST")),
            invalid_proof(),
        ),
        (
            "proof htm in lower case",
            Box::new(|c| c["htm"] = json!("get")),
            invalid_proof(),
        ),
        (
            "proof htu of another path",
            Box::new(|c| c["htu"] = json!("https://api.example.com/api/you")),
            invalid_proof(),
        ),
        (
            "proof htu of another host",
            Box::new(|c| c["htu"] = json!("https://evil.example.com/api/me")),
            invalid_proof(),
        ),
        (
            "proof htu with http instead of https",
            Box::new(|c| c["htu"] = json!("http://api.example.com/api/me")),
            invalid_proof(),
        ),
        (
            "proof htu with another port",
            Box::new(|c| c["htu"] = json!("https://api.example.com:8443/api/me")),
            invalid_proof(),
        ),
        (
            "proof htu relative",
            Box::new(|c| c["htu"] = json!("/api/me")),
            invalid_proof(),
        ),
        (
            "proof htu unparsable",
            Box::new(|c| c["htu"] = json!("ht!tp:::")),
            invalid_proof(),
        ),
        (
            "proof htu with credentials",
            Box::new(|c| c["htu"] = json!("https://user:pw@api.example.com/api/me")),
            invalid_proof(),
        ),
        (
            "proof htu with upper-case host, default port, query and fragment (normalised)",
            Box::new(|c| c["htu"] = json!("https://API.Example.com:443/api/me?x=1#frag")),
            ok(),
        ),
        (
            "proof htu with dot segments (normalised)",
            Box::new(|c| c["htu"] = json!("https://api.example.com/api/v/../me")),
            ok(),
        ),
        (
            "proof htu with a percent-encoded ~ for a path with ~ (not decoded)",
            Box::new(|c| c["htu"] = json!("https://api.example.com/api/%7Eme")),
            invalid_proof(),
        ),
        (
            "proof iat 61 s old",
            Box::new(|c| c["iat"] = json!(NOW - 61)),
            invalid_proof(),
        ),
        (
            "proof iat 60 s old",
            Box::new(|c| c["iat"] = json!(NOW - 60)),
            ok(),
        ),
        (
            "proof iat 10 s ahead",
            Box::new(|c| c["iat"] = json!(NOW + 10)),
            ok(),
        ),
        (
            "proof iat 11 s ahead",
            Box::new(|c| c["iat"] = json!(NOW + 11)),
            invalid_proof(),
        ),
        (
            "proof iat with a fraction (truncated)",
            Box::new(|c| c["iat"] = json!(NOW as f64 + 0.75)),
            ok(),
        ),
        (
            "proof without ath",
            Box::new(|c| c["ath"] = Value::Null),
            invalid_proof(),
        ),
        (
            "proof ath of another token",
            Box::new(|c| c["ath"] = json!(ath("another token"))),
            invalid_proof(),
        ),
        (
            "proof without nonce",
            Box::new(|c| c["nonce"] = Value::Null),
            use_nonce(),
        ),
        (
            "proof with a made-up nonce",
            Box::new(|c| c["nonce"] = json!("nonce")),
            use_nonce(),
        ),
        (
            "proof with the previous window's nonce (45 s old)",
            Box::new(|c| c["nonce"] = json!(k.nonce_at((NOW - 45) * 1000))),
            ok(),
        ),
        (
            "proof with a nonce issued 59.999 s ago",
            Box::new(|c| c["nonce"] = json!(k.nonce_at(NOW * 1000 - 59_999))),
            ok(),
        ),
        (
            "proof with a nonce issued 60 s ago",
            Box::new(|c| c["nonce"] = json!(k.nonce_at((NOW - 60) * 1000))),
            use_nonce(),
        ),
        (
            "proof with a nonce issued 10 s ahead (another instance's clock)",
            Box::new(|c| c["nonce"] = json!(k.nonce_at((NOW + 10) * 1000))),
            ok(),
        ),
        (
            "proof with a nonce issued 11 s ahead",
            Box::new(|c| c["nonce"] = json!(k.nonce_at((NOW + 11) * 1000))),
            use_nonce(),
        ),
        (
            "proof with a nonce of another secret",
            Box::new(|c| {
                let other = Nonces::new(b"another-secret-0123456789abcdefghijkl").expect("secret");
                c["nonce"] = json!(other.current(NOW).to_string());
            }),
            use_nonce(),
        ),
        (
            "proof with a forged nonce (issue time changed, old MAC)",
            Box::new(|c| {
                let mut b = B64.decode(k.nonce()).expect("nonce");
                b[..8].copy_from_slice(&((NOW + 100) * 1000).to_be_bytes());
                c["nonce"] = json!(B64.encode(b));
            }),
            use_nonce(),
        ),
        (
            "rule order: a wrong ath is reported before a missing nonce",
            Box::new(|c| {
                c["ath"] = json!(ath("another token"));
                c["nonce"] = Value::Null;
            }),
            invalid_proof(),
        ),
        (
            "rule order: an old iat is reported before a missing nonce",
            Box::new(|c| {
                c["iat"] = json!(NOW - 100);
                c["nonce"] = Value::Null;
            }),
            invalid_proof(),
        ),
        (
            "unknown claims are ignored",
            Box::new(|c| c["extra"] = json!({"any": "thing"})),
            ok(),
        ),
    ];
    for (name, alter, expect) in claim_cases {
        c.add(name, dpop(&bound, &k.proof_with(&bound, alter)), expect);
    }
    {
        let p = k.proof_with(&bound, |c| {
            c["htu"] = json!("https://api.example.com/api/%7Eme")
        });
        let mut r = dpop(&bound, &p);
        r.url = "/api/%7Eme".into();
        c.add("request path and htu both percent-encoded", r, ok());
    }
    // The key binding.
    let other_key = k.other_proof.sign_claims(&k.proof_claims(&bound));
    c.add(
        "proof by another key than cnf.jkt",
        dpop(&bound, &other_key),
        invalid_proof(),
    );
    let other_key_no_nonce = k.other_proof.sign_claims(&{
        let mut cl = k.proof_claims(&bound);
        cl.as_object_mut().map(|m| m.remove("nonce"));
        cl
    });
    c.add(
        "rule order: a missing nonce is reported before the key binding",
        dpop(&bound, &other_key_no_nonce),
        use_nonce(),
    );
    c.add(
        "rule order: an invalid token is reported before its proof",
        {
            let t = k.token_with(true, |c| c["exp"] = json!(NOW - 100));
            dpop(&t, "x.y.z")
        },
        invalid_token(true),
    );
    // Replays.
    {
        let p = k.proof(&bound);
        let first = dpop(&bound, &p);
        let case = c.add("a replayed proof", first.clone(), invalid_proof());
        case.replay_before.push(first);
        let p2 = k.proof_with(&bound, |c| c["jti"] = json!("the-same-jti"));
        let p3 = k.proof_with(&bound, |c| {
            c["jti"] = json!("the-same-jti");
            c["iat"] = json!(NOW - 1);
        });
        let case = c.add(
            "a new proof reusing an accepted proof's jti",
            dpop(&bound, &p3),
            invalid_proof(),
        );
        case.replay_before.push(dpop(&bound, &p2));
        let p4 = k.proof_with(&bound, |c| c["jti"] = json!("jti-a"));
        let p5 = k.proof_with(&bound, |c| c["jti"] = json!("jti-b"));
        let case = c.add(
            "two proofs with different jtis both pass",
            dpop(&bound, &p5),
            ok(),
        );
        case.replay_before.push(dpop(&bound, &p4));
    }
    // Origins from a loopback Host (no public origin configured).
    let local = |host: &str, htu: &str| {
        let p = k.proof_with(&bound, |c| c["htu"] = json!(htu));
        let mut r = dpop(&bound, &p);
        r.headers.insert("host".into(), json!(host));
        r
    };
    c.add(
        "no public origin: loopback Host with a port",
        local("127.0.0.1:8080", "http://127.0.0.1:8080/api/me"),
        ok(),
    )
    .config(host_origins());
    c.add(
        "no public origin: localhost, https htu",
        local("localhost", "https://localhost/api/me"),
        ok(),
    )
    .config(host_origins());
    c.add(
        "no public origin: Host LOCALHOST:80, htu http://localhost",
        local("LOCALHOST:80", "http://localhost/api/me"),
        ok(),
    )
    .config(host_origins());
    c.add(
        "no public origin: loopback Host, htu of another port",
        local("127.0.0.1:8080", "http://127.0.0.1:9090/api/me"),
        invalid_proof(),
    )
    .config(host_origins());
    c.add(
        "no public origin: a non-loopback Host is refused",
        local("api.example.com", HTU),
        invalid_proof(),
    )
    .config(host_origins());
    c.add(
        "public origin configured: the Host header is not what counts",
        local("127.0.0.1:8080", HTU),
        ok(),
    );
    // Revocations.
    c.add(
        "revoked session",
        dpop(&bound, &k.proof(&bound)),
        invalid_token(true),
    )
    .revoked
    .push(Revocation {
        kind: "session",
        id: "session-1".into(),
        until: NOW + 600,
    });
    c.add(
        "revoked token (logged out)",
        dpop(&bound, &k.proof(&bound)),
        invalid_token(true),
    )
    .revoked
    .push(Revocation {
        kind: "token",
        id: "token-1".into(),
        until: NOW + 600,
    });
    c.add(
        "revoked Bearer token: a Bearer challenge",
        bearer(&unbound),
        invalid_token(false),
    )
    .config(bearer_allowed())
    .revoked
    .push(Revocation {
        kind: "token",
        id: "token-1".into(),
        until: NOW + 600,
    });
    c.add(
        "another session revoked",
        dpop(&bound, &k.proof(&bound)),
        ok(),
    )
    .revoked
    .push(Revocation {
        kind: "session",
        id: "session-2".into(),
        until: NOW + 600,
    });

    // JSON texts as serde_json never writes them (a proof's key is the client's: anyone can
    // sign these). Both verifiers must take or refuse each alike.
    type Text = fn(&str) -> String;
    let same: Text = |t| t.to_owned();
    let raw: Vec<(&str, Text, Text, Expect)> = vec![
        (
            "valid proof signed over its JSON texts as given (the control of the cases below)",
            same,
            same,
            ok(),
        ),
        (
            "proof whose header starts with a byte order mark",
            |h| format!("\u{feff}{h}"),
            same,
            invalid_proof(),
        ),
        (
            "proof whose claims start with a byte order mark",
            same,
            |c| format!("\u{feff}{c}"),
            invalid_proof(),
        ),
        (
            "proof with an unpaired high surrogate escaped in its jti",
            same,
            |c| c.replacen(r#""jti":""#, r#""jti":"\ud800"#, 1),
            invalid_proof(),
        ),
        (
            "proof with an unpaired low surrogate escaped in its jti",
            same,
            |c| c.replacen(r#""jti":""#, r#""jti":"\udc00"#, 1),
            invalid_proof(),
        ),
        (
            "proof with a surrogate pair escaped in its jti",
            same,
            |c| c.replacen(r#""jti":""#, r#""jti":"\ud83d\ude00"#, 1),
            ok(),
        ),
        (
            "proof with an unpaired surrogate escaped in a jwk member it ignores",
            |h| h.replacen(r#""kty""#, r#""pad":"\udc00","kty""#, 1),
            same,
            invalid_proof(),
        ),
        (
            "proof with an unpaired surrogate escaped in a claim it ignores",
            same,
            |c| c.replacen('{', r#"{"note":"\udc00","#, 1),
            invalid_proof(),
        ),
        (
            "proof with a claim nested 32 deep, its own object counted",
            same,
            |c| {
                c.replacen(
                    '{',
                    &format!(r#"{{"deep":{}{},"#, "[".repeat(31), "]".repeat(31)),
                    1,
                )
            },
            ok(),
        ),
        (
            "proof with an unpaired surrogate escaped in a claim named twice, the last plain",
            same,
            |c| c.replacen('{', r#"{"note":"\udc00","note":"plain","#, 1),
            invalid_proof(),
        ),
        (
            "proof with a claim nested 33 deep, named twice, the last plain",
            same,
            |c| {
                c.replacen(
                    '{',
                    &format!(r#"{{"deep":{}{},"deep":0,"#, "[".repeat(32), "]".repeat(32)),
                    1,
                )
            },
            invalid_proof(),
        ),
        (
            "proof with a claim nested 33 deep",
            same,
            |c| {
                c.replacen(
                    '{',
                    &format!(r#"{{"deep":{}{},"#, "[".repeat(32), "]".repeat(32)),
                    1,
                )
            },
            invalid_proof(),
        ),
        (
            "proof with brackets in a string (no nesting)",
            same,
            |c| c.replacen('{', &format!(r#"{{"deep":"{}","#, "[{".repeat(40)), 1),
            ok(),
        ),
        (
            // serde_json refuses a number past a double's range where it reads a value (the
            // jwk); JSON.parse makes it Infinity. One in a claim neither reads is skipped by both.
            "proof with a jwk member too large for a double (1e400)",
            |h| h.replacen(r#""kty""#, r#""ext":1e400,"kty""#, 1),
            same,
            invalid_proof(),
        ),
        (
            "proof with a number too large for a double in a claim it ignores",
            same,
            |c| c.replacen('{', r#"{"note":1e400,"#, 1),
            ok(),
        ),
        (
            "proof with a jwk member nested 200 deep",
            |h| {
                let deep = format!(r#""pad":{}{},"kty""#, "[".repeat(200), "]".repeat(200));
                h.replacen(r#""kty""#, &deep, 1)
            },
            same,
            invalid_proof(),
        ),
    ];
    for (name, header, claims, expect) in raw {
        let request = raw_proof(k, |h| header(h).into_bytes(), |c| claims(c).into_bytes());
        c.add(name, request, expect);
    }
    // Not UTF-8, in a member neither verifier reads (serde does not check a string it skips).
    c.add(
        "proof with a byte that is not UTF-8 in a claim it ignores",
        raw_proof(
            k,
            |h| h.as_bytes().to_vec(),
            |c| [&br#"{"note":""#[..], &[0xff], b"\",", &c.as_bytes()[1..]].concat(),
        ),
        invalid_proof(),
    );
    // The same rule for the access token's claims.
    let nested = |levels: usize| (1..levels).fold(json!([]), |v, _| json!([v]));
    let deep = k.token_with(true, |c| c["deep"] = nested(32));
    c.add(
        "token with a claim nested 33 deep",
        dpop(&deep, &k.proof(&deep)),
        invalid_token(true),
    );
    let deep = k.token_with(true, |c| c["deep"] = nested(31));
    c.add(
        "token with a claim nested 32 deep, its own object counted",
        dpop(&deep, &k.proof(&deep)),
        ok(),
    );
    // A claim past a double's range: serde_json refuses it in the claims it reads as values.
    let huge = {
        let claims = k
            .claims(true)
            .to_string()
            .replacen('{', r#"{"score":1e400,"#, 1);
        let input = format!(
            "{}.{}",
            B64.encode(k.header().to_string()),
            B64.encode(claims)
        );
        let sig = k.token.sign(input.as_bytes()).to_bytes();
        format!("{input}.{}", B64.encode(sig))
    };
    c.add(
        "token with a claim too large for a double (1e400)",
        dpop(&huge, &k.proof(&huge)),
        invalid_token(true),
    );
    c.0
}

/// `owner`'s signature of `m` with R the identity and S = k·a: valid to a cofactorless
/// verifier, refused by a strict one.
fn identity_r(owner: &SigningKey, m: &[u8]) -> Vec<u8> {
    let mut identity = [0u8; 32];
    identity[0] = 1;
    encoded_r(owner, m, identity)
}

/// [`identity_r`] with the identity encoded as `identity` (k hashes R as it is encoded).
fn encoded_r(owner: &SigningKey, m: &[u8], identity: [u8; 32]) -> Vec<u8> {
    let hash = sha2::Sha512::new()
        .chain_update(identity)
        .chain_update(owner.verifying_key().to_bytes())
        .chain_update(m)
        .finalize();
    let s = Scalar::from_bytes_mod_order_wide(&hash.into()) * owner.to_scalar();
    let mut sig = identity.to_vec();
    sig.extend_from_slice(s.as_bytes());
    sig
}

/// A forgery under the key of small order `weak`, with R = [r]B and S = r (r = 7): [S]B = R +
/// [k]A whenever [k]A is the identity, so a cofactorless verifier takes it for every message
/// whose hash is a multiple of A's order. The first JWS `make(n, signature)` makes (n = 0, 1,
/// ...) that a lax verifier takes; one is asserted to exist when `weak` decodes (one that does
/// not is refused by every verifier anyway).
fn forge_under(weak: &[u8; 32], what: &str, make: impl Fn(usize, &[u8]) -> String) -> String {
    use ed25519_dalek::Verifier;
    let r = Scalar::from(7u64);
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(
        (curve25519_dalek::constants::ED25519_BASEPOINT_POINT * r)
            .compress()
            .as_bytes(),
    );
    sig[32..].copy_from_slice(r.as_bytes());
    let Ok(lax) = ed25519_dalek::VerifyingKey::from_bytes(weak) else {
        return make(0, &sig);
    };
    let s = ed25519_dalek::Signature::from_bytes(&sig);
    for n in 0..256 {
        let jws = make(n, &sig);
        let (signed, _) = jws.rsplit_once('.').expect("a JWS");
        if lax.verify(signed.as_bytes(), &s).is_ok() {
            return jws;
        }
    }
    panic!("no forgery of {what} under a key of small order");
}

/// A request whose proof is signed over the JSON texts `header` and `claims` make of a valid
/// proof's (Ed25519, by a key of this function's, the token bound to it).
fn raw_proof(
    k: &Keys,
    header: impl Fn(&str) -> Vec<u8>,
    claims: impl Fn(&str) -> Vec<u8>,
) -> Request {
    let key = SigningKey::from_bytes(&[0x33; 32]);
    let x = B64.encode(key.verifying_key().to_bytes());
    let token = k.token_with(true, |c| c["cnf"] = json!({ "jkt": okp_thumbprint(&key) }));
    let h = json!({
        "typ": "dpop+jwt", "alg": "EdDSA",
        "jwk": { "kty": "OKP", "crv": "Ed25519", "x": x },
    });
    let input = format!(
        "{}.{}",
        B64.encode(header(&h.to_string())),
        B64.encode(claims(&k.proof_claims(&token).to_string()))
    );
    let sig = key.sign(input.as_bytes()).to_bytes();
    dpop(&token, &format!("{input}.{}", B64.encode(sig)))
}

fn main() {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tests/conformance/corpus.json".into());
    let k = Keys::new();
    let corpus = Corpus {
        about: vec![
            "tokenwarden conformance corpus, format 1: tests/conformance/README.md.",
            "Written by `cargo run -p tokenwarden-dpop --example conformance -- tests/conformance/corpus.json`; runners only read it.",
            "config: the verifier's settings for every case (a case's config overrides members). Token key: jwks; nonces: HMAC under nonce_secret.",
            "cases[]: {name, now (unix s), config?, request {method, url (path and query), headers {lower-case name: value or [values]}}, replay_before? [requests accepted first, in order, by the same verifier], revoked? [{kind session|token, id, until}], skip? {implementation: why}, expect {status, error?, challenge_contains? [substrings of the WWW-Authenticate values], dpop_nonce? (a DPoP-Nonce header is in the answer)}}.",
        ],
        config: Config {
            issuer: Some(ISSUER.into()),
            audience: Some(AUDIENCE.into()),
            leeway_secs: Some(5),
            public_origins: Some(vec![ORIGIN.into()]),
            allow_bearer: Some(false),
            nonce_secret: Some(NONCE_SECRET.into()),
            jwks: Some(k.jwks()),
        },
        cases: cases(&k),
    };
    let mut text = serde_json::to_string_pretty(&corpus).expect("serialisable");
    text.push('\n');
    if let Err(e) = std::fs::write(&out, text) {
        eprintln!("writing {out}: {e}");
        std::process::exit(1);
    }
    eprintln!("{out}: {} cases", corpus.cases.len());
}
