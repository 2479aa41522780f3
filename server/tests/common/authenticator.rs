//! A software authenticator (WebAuthn Level 3, `none` attestation, ES256): what a browser and
//! a platform authenticator hand the server, made here so that a test can also make what they
//! never would (another origin, another RP ID, a counter that goes backwards).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// CBOR (RFC 8949), just what attestation objects and COSE keys need.
enum Cbor {
    Int(i64),
    Bytes(Vec<u8>),
    Text(&'static str),
    Map(Vec<(Cbor, Cbor)>),
}

fn head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    match n {
        0..=23 => out.push(m | n as u8),
        24..=0xff => out.extend([m | 24, n as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend((n as u16).to_be_bytes());
        }
        _ => {
            out.push(m | 26);
            out.extend((n as u32).to_be_bytes());
        }
    }
}

impl Cbor {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Cbor::Int(i) if *i >= 0 => head(out, 0, *i as u64),
            Cbor::Int(i) => head(out, 1, (-1 - *i) as u64),
            Cbor::Bytes(b) => {
                head(out, 2, b.len() as u64);
                out.extend(b);
            }
            Cbor::Text(t) => {
                head(out, 3, t.len() as u64);
                out.extend(t.as_bytes());
            }
            Cbor::Map(entries) => {
                head(out, 5, entries.len() as u64);
                for (k, v) in entries {
                    k.encode(out);
                    v.encode(out);
                }
            }
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// User present, user verified, attested credential data.
const UP: u8 = 0x01;
const UV: u8 = 0x04;
const AT: u8 = 0x40;

/// One passkey held by the authenticator.
pub struct SoftPasskey {
    key: EcdsaKeyPair,
    pub id: Vec<u8>,
    /// The user handle the server gave at registration.
    pub user_handle: Vec<u8>,
    pub rp_id: String,
    /// The signature counter: the next assertion carries it plus one (tests set it back).
    pub counter: u32,
}

/// What the authenticator writes as the page's origin and RP ID (a test may lie).
pub struct Page<'a> {
    pub origin: &'a str,
    pub rp_id: &'a str,
}

fn client_data(kind: &str, challenge: &str, origin: &str) -> Vec<u8> {
    json!({ "type": kind, "challenge": challenge, "origin": origin, "crossOrigin": false })
        .to_string()
        .into_bytes()
}

fn auth_data(rp_id: &str, flags: u8, counter: u32, attested: Option<&[u8]>) -> Vec<u8> {
    let mut d = Sha256::digest(rp_id.as_bytes()).to_vec();
    d.push(flags);
    d.extend(counter.to_be_bytes());
    if let Some(a) = attested {
        d.extend(a);
    }
    d
}

impl SoftPasskey {
    /// `navigator.credentials.create()` for `options` (the server's `options`, i.e.
    /// `{publicKey: ...}`) on `page`: the new passkey and the credential JSON (as
    /// `PublicKeyCredential.toJSON()` gives it).
    pub fn create(options: &Value, page: &Page<'_>) -> (SoftPasskey, Value) {
        Self::create_with_id_of(32, options, page)
    }

    /// [`Self::create`] with a credential id of `id_len` bytes (an authenticator makes at most
    /// 1023: WebAuthn L3 §6.5.1; anyone can write a longer one).
    pub fn create_with_id_of(
        id_len: usize,
        options: &Value,
        page: &Page<'_>,
    ) -> (SoftPasskey, Value) {
        let pk = &options["publicKey"];
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let point = key.public_key().as_ref().to_vec();
        let mut id = vec![0u8; id_len];
        ring::rand::SecureRandom::fill(&rng, &mut id).unwrap();
        let cose = Cbor::Map(vec![
            (Cbor::Int(1), Cbor::Int(2)),
            (Cbor::Int(3), Cbor::Int(-7)),
            (Cbor::Int(-1), Cbor::Int(1)),
            (Cbor::Int(-2), Cbor::Bytes(point[1..33].to_vec())),
            (Cbor::Int(-3), Cbor::Bytes(point[33..].to_vec())),
        ])
        .bytes();
        let mut attested = vec![0u8; 16]; // AAGUID
        attested.extend((id.len() as u16).to_be_bytes());
        attested.extend(&id);
        attested.extend(cose);
        let data = auth_data(page.rp_id, UP | UV | AT, 0, Some(&attested));
        let object = Cbor::Map(vec![
            (Cbor::Text("fmt"), Cbor::Text("none")),
            (Cbor::Text("attStmt"), Cbor::Map(vec![])),
            (Cbor::Text("authData"), Cbor::Bytes(data)),
        ])
        .bytes();
        let challenge = pk["challenge"].as_str().unwrap();
        let cdj = client_data("webauthn.create", challenge, page.origin);
        let user_handle = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(pk["user"]["id"].as_str().unwrap())
            .unwrap();
        let credential = json!({
            "id": B64.encode(&id), "rawId": B64.encode(&id), "type": "public-key",
            "response": {
                "clientDataJSON": B64.encode(&cdj),
                "attestationObject": B64.encode(&object),
                "transports": ["internal"],
            },
            "extensions": {},
        });
        (
            SoftPasskey {
                key,
                id,
                user_handle,
                rp_id: pk["rp"]["id"].as_str().unwrap().to_owned(),
                counter: 0,
            },
            credential,
        )
    }

    /// `navigator.credentials.get()` for `options` on `page`: the assertion JSON, its counter
    /// one more than the last.
    pub fn get(&mut self, options: &Value, page: &Page<'_>) -> Value {
        self.counter += 1;
        let challenge = options["publicKey"]["challenge"].as_str().unwrap();
        let cdj = client_data("webauthn.get", challenge, page.origin);
        let data = auth_data(page.rp_id, UP | UV, self.counter, None);
        let mut signed = data.clone();
        signed.extend(Sha256::digest(&cdj));
        let sig = self
            .key
            .sign(&SystemRandom::new(), &signed)
            .unwrap()
            .as_ref()
            .to_vec();
        json!({
            "id": B64.encode(&self.id), "rawId": B64.encode(&self.id), "type": "public-key",
            "response": {
                "authenticatorData": B64.encode(&data),
                "clientDataJSON": B64.encode(&cdj),
                "signature": B64.encode(&sig),
                "userHandle": B64.encode(&self.user_handle),
            },
            "extensions": {},
        })
    }
}
