//! `tokenwarden-load`: requests per second of `GET /api/me` with DPoP verification.
//!
//! wrk cannot sign: every DPoP request needs its own proof (a fresh `jti`, the current nonce,
//! `ath` of the token). This tool logs in with a proof (a bound session), pre-signs one proof
//! per request on every core *before* the clock starts, then drives `--connections` keep-alive
//! HTTP/1.1 connections for `--secs` seconds and prints requests/s, p99 and non-2xx counts.
//! Proofs are EdDSA (an Ed25519 key), as the client signs where the browser has Ed25519;
//! `--es256` signs them with a P-256 key instead. `--bearer` measures the same with an unbound
//! session for comparison.
//!
//! ```text
//! tokenwarden-load --base http://127.0.0.1:8080 --email demo@tokenwarden.dev \
//!     --password 'correct horse battery staple' [--connections 64] [--secs 5] [--bearer|--es256]
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokenwarden_dpop::ProofSigner;
use tokio::net::TcpStream;

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    base: String,
    email: String,
    password: String,
    connections: usize,
    secs: u64,
    threads: usize,
    bearer: bool,
    es256: bool,
    proofs_per_sec: usize,
    crypto: bool,
    server_pid: Option<u32>,
}

fn args() -> Result<Args, Error> {
    let mut a = Args {
        base: "http://127.0.0.1:8080".into(),
        email: "demo@tokenwarden.dev".into(),
        password: "correct horse battery staple".into(),
        connections: 64,
        secs: 5,
        threads: 2,
        bearer: false,
        es256: false,
        proofs_per_sec: 20_000,
        crypto: false,
        server_pid: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--base" => a.base = value()?.trim_end_matches('/').to_owned(),
            "--email" => a.email = value()?,
            "--password" => a.password = value()?,
            "--connections" => a.connections = value()?.parse()?,
            "--secs" => a.secs = value()?.parse()?,
            "--threads" => a.threads = value()?.parse()?,
            "--proofs-per-sec" => a.proofs_per_sec = value()?.parse()?,
            "--bearer" => a.bearer = true,
            "--es256" => a.es256 = true,
            "--crypto" => a.crypto = true,
            "--server-pid" => a.server_pid = Some(value()?.parse()?),
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    if !a.base.starts_with("http://") {
        return Err("--base must be an http:// URL (no TLS here)".into());
    }
    Ok(a)
}

/// CPU seconds (user + system) a process has used, from /proc (Linux).
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// One HTTP/1.1 connection to `authority`.
async fn connect(
    authority: &str,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, Error> {
    let stream = TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

struct Answer {
    status: u16,
    nonce: Option<String>,
    body: Bytes,
}

async fn call(authority: &str, req: Request<Full<Bytes>>) -> Result<Answer, Error> {
    let mut sender = connect(authority).await?;
    let res = sender.send_request(req).await?;
    let status = res.status().as_u16();
    let nonce = res
        .headers()
        .get("dpop-nonce")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = res.into_body().collect().await?.to_bytes();
    Ok(Answer {
        status,
        nonce,
        body,
    })
}

async fn nonce(a: &Args, authority: &str) -> Result<String, Error> {
    let req = Request::get(format!("{}/healthz", a.base))
        .header("host", authority)
        .body(Full::new(Bytes::new()))?;
    call(authority, req)
        .await?
        .nonce
        .ok_or_else(|| "the server sends no DPoP-Nonce".into())
}

/// Logs in (bound to `key` unless `--bearer`) and returns the access token.
async fn login(a: &Args, authority: &str, key: &ProofSigner) -> Result<String, Error> {
    let body = serde_json::json!({ "email": a.email, "password": a.password }).to_string();
    let mut req = Request::post(format!("{}/auth/login", a.base))
        .header("host", authority)
        .header("content-type", "application/json");
    if !a.bearer {
        let n = nonce(a, authority).await?;
        let p = key.proof(
            "POST",
            &format!("{}/auth/login", a.base),
            unix_now(),
            None,
            Some(&n),
        );
        req = req.header("dpop", p);
    }
    let res = call(authority, req.body(Full::new(Bytes::from(body)))?).await?;
    if res.status != 200 {
        return Err(format!(
            "login: {} {}",
            res.status,
            String::from_utf8_lossy(&res.body)
        )
        .into());
    }
    let json: serde_json::Value = serde_json::from_slice(&res.body)?;
    let want = if a.bearer { "Bearer" } else { "DPoP" };
    if json["token_type"] != want {
        return Err(format!("login: token_type {} (expected {want})", json["token_type"]).into());
    }
    json["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "login: no access_token".into())
}

/// `count` proofs for `GET /api/me`, signed on `threads` threads.
fn presign(
    key: &ProofSigner,
    url: &str,
    token: &str,
    nonce: &str,
    count: usize,
    threads: usize,
) -> Vec<String> {
    let iat = unix_now();
    let per = count.div_ceil(threads.max(1));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                s.spawn(move || {
                    (0..per)
                        .map(|_| key.proof("GET", url, iat, Some(token), Some(nonce)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .take(count)
            .collect()
    })
}

#[derive(Default)]
struct Tally {
    ok: u64,
    non2xx: u64,
    latencies_us: Vec<u32>,
    first_error: Option<String>,
}

async fn drive(
    authority: Arc<str>,
    me: Arc<str>,
    authorization: Arc<str>,
    proofs: Arc<Vec<String>>,
    next: Arc<AtomicUsize>,
    deadline: Instant,
) -> Result<Tally, Error> {
    let mut sender = connect(&authority).await?;
    let mut t = Tally::default();
    while Instant::now() < deadline {
        let mut req = Request::get(&*me)
            .header("host", &*authority)
            .header("authorization", &*authorization);
        if !proofs.is_empty() {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(p) = proofs.get(i) else { break };
            req = req.header("dpop", p.as_str());
        }
        let req = req.body(Full::new(Bytes::new()))?;
        let start = Instant::now();
        sender.ready().await?;
        let res = sender.send_request(req).await?;
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        t.latencies_us
            .push(start.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
        if status.is_success() {
            t.ok += 1;
        } else {
            t.non2xx += 1;
            if t.first_error.is_none() {
                t.first_error = Some(format!("{status} {}", String::from_utf8_lossy(&body)));
            }
        }
    }
    Ok(t)
}

/// Microseconds per proof signed and per proof verified (one core, this machine), with an
/// ES256 key and with an Ed25519 one: `sign_us`, `verify_us` (a whole proof check) and
/// `signature_us` (the signature alone) for each.
fn crypto() -> Result<(), Error> {
    let mut out = serde_json::Map::new();
    for (name, key) in [
        ("es256", ProofSigner::generate()),
        ("eddsa", ProofSigner::generate_ed25519()),
    ] {
        out.insert(name.into(), crypto_of(&key)?);
    }
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}

fn crypto_of(key: &ProofSigner) -> Result<serde_json::Value, Error> {
    let secret = [7u8; 32];
    let nonces = tokenwarden_dpop::Nonces::new(&secret).ok_or("nonce secret")?;
    let now = unix_now();
    let nonce = nonces.current(now).to_string();
    let verifier = tokenwarden_dpop::Verifier::new(nonces);
    let origins = vec!["http://127.0.0.1:8080".to_owned()];
    let n = 2000;
    let t0 = Instant::now();
    let proofs: Vec<String> = (0..n)
        .map(|_| {
            key.proof(
                "GET",
                "http://127.0.0.1:8080/api/me",
                now,
                Some("token"),
                Some(&nonce),
            )
        })
        .collect();
    let sign = t0.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    let t0 = Instant::now();
    for p in &proofs {
        let expected = tokenwarden_dpop::Expected {
            method: "GET",
            path: "/api/me",
            origins: tokenwarden_dpop::Origins::List(&origins),
            access_token: Some("token"),
            jkt: Some(key.thumbprint()),
            now,
        };
        verifier.verify(p, &expected).map_err(|e| e.to_string())?;
    }
    let verify = t0.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    // The signature check alone, on the same inputs.
    let (signed, sig) = proofs[0].rsplit_once('.').ok_or("proof")?;
    let sig = base64_decode(sig);
    let t0 = Instant::now();
    for _ in 0..n {
        if !key.public_key().verify(signed.as_bytes(), &sig) {
            return Err("signature".into());
        }
    }
    let signature = t0.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    Ok(serde_json::json!({ "sign_us": sign, "verify_us": verify, "signature_us": signature }))
}

/// base64url without padding (test input only).
fn base64_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            _ => 63,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn main() -> Result<(), Error> {
    let a = args()?;
    if a.crypto {
        return crypto();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(run(a))
}

async fn run(a: Args) -> Result<(), Error> {
    let authority: Arc<str> = a.base.trim_start_matches("http://").into();
    let me: Arc<str> = format!("{}/api/me", a.base).into();
    let key = if a.es256 {
        ProofSigner::generate()
    } else {
        ProofSigner::generate_ed25519()
    };
    let token = login(&a, &authority, &key).await?;
    let (authorization, proofs) = if a.bearer {
        (format!("Bearer {token}"), Vec::new())
    } else {
        // A nonce lives 30 to 60 s from when it is handed out: signing plus the run must
        // fit in 30 s (checked below).
        let n = nonce(&a, &authority).await?;
        let fetched = Instant::now();
        let count = a.proofs_per_sec * a.secs as usize;
        let t0 = Instant::now();
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let proofs = presign(&key, &me, &token, &n, count, threads);
        eprintln!(
            "pre-signed {} proofs in {:.1} s",
            proofs.len(),
            t0.elapsed().as_secs_f64()
        );
        if fetched.elapsed() + Duration::from_secs(a.secs) > Duration::from_secs(28) {
            return Err(format!(
                "signing took {:.0} s: the nonce would expire during the run (machine busy?); \
                 lower --proofs-per-sec or --secs",
                fetched.elapsed().as_secs_f64()
            )
            .into());
        }
        (format!("DPoP {token}"), proofs)
    };
    let authorization: Arc<str> = authorization.into();
    let proofs = Arc::new(proofs);
    let next = Arc::new(AtomicUsize::new(0));
    let server_cpu0 = a.server_pid.and_then(cpu_secs);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(a.secs);
    let tasks: Vec<_> = (0..a.connections)
        .map(|_| {
            tokio::spawn(drive(
                authority.clone(),
                me.clone(),
                authorization.clone(),
                proofs.clone(),
                next.clone(),
                deadline,
            ))
        })
        .collect();
    let mut all = Tally::default();
    for t in tasks {
        let t = t.await??;
        all.ok += t.ok;
        all.non2xx += t.non2xx;
        all.latencies_us.extend(t.latencies_us);
        all.first_error = all.first_error.or(t.first_error);
    }
    if let Some(e) = &all.first_error {
        eprintln!("first non-2xx answer: {e}");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let server_cpu = a
        .server_pid
        .and_then(cpu_secs)
        .zip(server_cpu0)
        .map(|(b, a)| b - a);
    if !proofs.is_empty() && next.load(Ordering::Relaxed) >= proofs.len() {
        eprintln!(
            "note: all pre-signed proofs were used before the time was up (raise --proofs-per-sec)"
        );
    }
    all.latencies_us.sort_unstable();
    let p99 = all
        .latencies_us
        .get((all.latencies_us.len() * 99 / 100).min(all.latencies_us.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0);
    let total = all.ok + all.non2xx;
    let rps = total as f64 / elapsed;
    println!(
        "{}",
        serde_json::json!({
            "mode": if a.bearer { "bearer" } else if a.es256 { "dpop es256" } else { "dpop eddsa" },
            "requests": total, "secs": elapsed, "rps": rps,
            "p99_ms": f64::from(p99) / 1000.0, "non2xx": all.non2xx,
            "connections": a.connections,
            "server_cpu_secs": server_cpu,
            "server_cpu_us_per_request": server_cpu.map(|c| c * 1e6 / total.max(1) as f64),
        })
    );
    eprintln!(
        "{} GET /api/me: {total} requests in {elapsed:.2} s = {rps:.0} req/s, p99 {:.2} ms, non-2xx {}",
        if a.bearer { "Bearer" } else { "DPoP" },
        f64::from(p99) / 1000.0,
        all.non2xx
    );
    Ok(())
}
