//! Password hashes in the formats apps export, so that their users sign in with the password
//! they have: argon2id and argon2i (PHC), bcrypt (`$2a$`, `$2b$`, `$2y$`), scrypt (PHC),
//! PBKDF2-SHA256 (PHC `$pbkdf2-sha256$`, and Django's `pbkdf2_sha256$`). Hashes made here are
//! argon2id with OWASP's parameters; any other is replaced by one at the first sign-in that
//! proves the password (crate::password).
//!
//! A stored hash is parsed before it is used, and its cost parameters are bounded: a hash with
//! a cost that would take the server minutes or gigabytes (a hostile import, a corrupted row)
//! is refused as malformed, never run. Parsing is what `users import` checks each line with.

use argon2::Argon2;
use argon2::password_hash::PasswordVerifier;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The formats understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Argon2id,
    Argon2i,
    Bcrypt,
    Scrypt,
    Pbkdf2Sha256,
    DjangoPbkdf2Sha256,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Argon2id => "argon2id",
            Kind::Argon2i => "argon2i",
            Kind::Bcrypt => "bcrypt",
            Kind::Scrypt => "scrypt",
            Kind::Pbkdf2Sha256 => "pbkdf2-sha256",
            Kind::DjangoPbkdf2Sha256 => "django pbkdf2_sha256",
        }
    }
}

/// Why a stored hash cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    #[error(
        "unknown password hash format (argon2id, argon2i, bcrypt $2a$/$2b$/$2y$, scrypt, \
         $pbkdf2-sha256$ or Django's pbkdf2_sha256$ are understood)"
    )]
    Unknown,
    #[error("malformed {0} hash")]
    Malformed(&'static str),
    #[error("{0} hash whose cost is beyond what this server runs ({1})")]
    TooCostly(&'static str, &'static str),
}

/// Limits on stored hashes' costs (what one verification may take).
const BCRYPT_MAX_COST: u32 = 16;
const PBKDF2_MAX_ROUNDS: u32 = 10_000_000;
/// scrypt's memory, 128 · r · 2^ln bytes, and argon2's m: at most 256 MiB.
const MAX_MEMORY_BYTES: u64 = 256 << 20;
const ARGON2_MAX_TIME: u32 = 16;
const MAX_LANES: u32 = 16;
/// Tighter limits for a hash imported now (about a second a verification: anyone may send a
/// wrong password for an account, and each holds a hashing turn meanwhile). A hash stored
/// before them still verifies under the limits above. argon2's m · t and scrypt's
/// 128 · r · 2^ln · p are the memory passed over, which is its time.
const IMPORT_BCRYPT_MAX_COST: u64 = 14;
const IMPORT_PBKDF2_MAX_ROUNDS: u64 = 2_000_000;
const IMPORT_ARGON2_MAX_WORK_BYTES: u64 = 1 << 30;
const IMPORT_SCRYPT_MAX_WORK_BYTES: u64 = 512 << 20;

/// A PHC string's `$id$params$salt$hash` (argon2's version field, `v=19`, is a part of its own).
struct Phc<'a> {
    params: Vec<(&'a str, &'a str)>,
    salt: &'a str,
    hash: &'a str,
}

fn phc<'a>(s: &'a str, id: &str) -> Option<Phc<'a>> {
    let rest = s.strip_prefix('$')?.strip_prefix(id)?.strip_prefix('$')?;
    let mut parts = rest.split('$');
    let mut first = parts.next()?;
    if first.starts_with("v=") {
        first = parts.next()?;
    }
    let params = first
        .split(',')
        .map(|kv| kv.split_once('='))
        .collect::<Option<Vec<_>>>()?;
    let (salt, hash) = (parts.next()?, parts.next()?);
    if parts.next().is_some() || salt.is_empty() || hash.is_empty() {
        return None;
    }
    // A name given twice is malformed: a reader taking the first and a verifier taking the
    // last (argon2's) would check one cost and run another.
    if (1..params.len()).any(|i| params[..i].iter().any(|(k, _)| *k == params[i].0)) {
        return None;
    }
    Some(Phc { params, salt, hash })
}

impl Phc<'_> {
    fn number(&self, name: &str) -> Option<u64> {
        self.params
            .iter()
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.parse().ok())
    }
}

/// PHC's B64: standard alphabet, no padding (some writers pad anyway).
fn b64(s: &str) -> Option<Vec<u8>> {
    STANDARD_NO_PAD
        .decode(s.trim_end_matches('='))
        .ok()
        .filter(|b| !b.is_empty())
}

/// The format of `stored`, with its costs checked as a hash imported now: [`kind_of`], and
/// what one verification of it would take bounded to about a second.
pub fn importable(stored: &str) -> Result<Kind, HashError> {
    let kind = kind_of(stored)?;
    let too_costly = |limit| Err(HashError::TooCostly(kind.as_str(), limit));
    match kind {
        Kind::Bcrypt => {
            let cost: u64 = stored
                .get(4..6)
                .and_then(|c| c.parse().ok())
                .unwrap_or(u64::MAX);
            if cost > IMPORT_BCRYPT_MAX_COST {
                return too_costly("cost ≤ 14");
            }
        }
        Kind::Argon2id | Kind::Argon2i => {
            let (m, t, _) = argon2_costs(stored, kind)?;
            if m.saturating_mul(1024).saturating_mul(t) > IMPORT_ARGON2_MAX_WORK_BYTES {
                return too_costly("m·t ≤ 1 GiB");
            }
        }
        Kind::Scrypt => {
            let s = scrypt_params(stored)?;
            let work = 128u64
                .saturating_mul(u64::from(s.r))
                .saturating_mul(1u64 << s.log_n)
                .saturating_mul(u64::from(s.p));
            if work > IMPORT_SCRYPT_MAX_WORK_BYTES {
                return too_costly("128·r·2^ln·p ≤ 512 MiB");
            }
        }
        Kind::Pbkdf2Sha256 | Kind::DjangoPbkdf2Sha256 => {
            let (rounds, _, hash) = if kind == Kind::Pbkdf2Sha256 {
                pbkdf2_phc(stored)?
            } else {
                django(stored)?
            };
            // PBKDF2 runs all its rounds for each 32 bytes (SHA-256's output) of the hash.
            let blocks = hash.len().div_ceil(32) as u64;
            if u64::from(rounds).saturating_mul(blocks) > IMPORT_PBKDF2_MAX_ROUNDS {
                return too_costly("at most 2,000,000 rounds per 32 bytes of hash");
            }
        }
    }
    Ok(kind)
}

/// An argon2 hash's memory (KiB), passes and lanes, as its verifier reads them (the values
/// checked are the values run): `m`, `t` and `p` each exactly once and nothing else.
fn argon2_costs(stored: &str, kind: Kind) -> Result<(u64, u64, u64), HashError> {
    let malformed = || HashError::Malformed(kind.as_str());
    let p = phc(stored, kind.as_str()).ok_or_else(malformed)?;
    let mut names: Vec<&str> = p.params.iter().map(|(k, _)| *k).collect();
    names.sort_unstable();
    if names != ["m", "p", "t"] {
        return Err(malformed());
    }
    let hash = argon2::PasswordHash::new(stored).map_err(|_| malformed())?;
    // Argon2's two versions, 0x10 and 0x13 (none: 0x10, below): any other number parsed, and
    // the hash, imported, then never verified.
    if !matches!(hash.version, None | Some(0x10 | 0x13)) {
        return Err(malformed());
    }
    let params = argon2::Params::try_from(&hash).map_err(|_| malformed())?;
    Ok((
        u64::from(params.m_cost()),
        u64::from(params.t_cost()),
        u64::from(params.p_cost()),
    ))
}

/// The format of `stored`, with its costs checked.
pub fn kind_of(stored: &str) -> Result<Kind, HashError> {
    // (No format holds one; PostgreSQL's text cannot: an import would fail as a whole.)
    if stored.contains('\0') {
        return Err(HashError::Malformed("password hash"));
    }
    if stored.starts_with("$argon2id$") || stored.starts_with("$argon2i$") {
        let kind = if stored.starts_with("$argon2id$") {
            Kind::Argon2id
        } else {
            Kind::Argon2i
        };
        let (m, t, lanes) = argon2_costs(stored, kind)?;
        if m.saturating_mul(1024) > MAX_MEMORY_BYTES || t > u64::from(ARGON2_MAX_TIME) {
            return Err(HashError::TooCostly(kind.as_str(), "m ≤ 256 MiB, t ≤ 16"));
        }
        if lanes == 0 || lanes > u64::from(MAX_LANES) {
            return Err(HashError::TooCostly(kind.as_str(), "p ≤ 16"));
        }
        return Ok(kind);
    }
    for prefix in ["$2a$", "$2b$", "$2y$"] {
        if let Some(rest) = stored.strip_prefix(prefix) {
            let cost: u32 = rest
                .get(..2)
                .and_then(|c| c.parse().ok())
                .ok_or(HashError::Malformed("bcrypt"))?;
            if rest.len() != 56 || rest.as_bytes().get(2) != Some(&b'$') || cost < 4 {
                return Err(HashError::Malformed("bcrypt"));
            }
            if cost > BCRYPT_MAX_COST {
                return Err(HashError::TooCostly("bcrypt", "cost ≤ 16"));
            }
            // The salt and the hash in bcrypt's base64: a corrupted one would import and then
            // never verify, the user locked out without a word.
            if stored.parse::<bcrypt::HashParts>().is_err() {
                return Err(HashError::Malformed("bcrypt"));
            }
            return Ok(Kind::Bcrypt);
        }
    }
    if stored.starts_with("$scrypt$") {
        scrypt_params(stored)?;
        return Ok(Kind::Scrypt);
    }
    if stored.starts_with("$pbkdf2-sha256$") {
        pbkdf2_phc(stored)?;
        return Ok(Kind::Pbkdf2Sha256);
    }
    if stored.starts_with("pbkdf2_sha256$") {
        django(stored)?;
        return Ok(Kind::DjangoPbkdf2Sha256);
    }
    Err(HashError::Unknown)
}

struct Scrypt {
    log_n: u8,
    r: u32,
    p: u32,
    /// What scrypt runs (checked here: one it would refuse, such as `ln ≥ 16·r`, is
    /// malformed, not a hash that imports and then never verifies).
    params: scrypt::Params,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

fn scrypt_params(stored: &str) -> Result<Scrypt, HashError> {
    let bad = HashError::Malformed("scrypt");
    let p = phc(stored, "scrypt").ok_or(bad.clone())?;
    let (Some(ln), Some(r), Some(lanes)) = (p.number("ln"), p.number("r"), p.number("p")) else {
        return Err(bad);
    };
    let (Some(salt), Some(hash)) = (b64(p.salt), b64(p.hash)) else {
        return Err(bad);
    };
    if !(1..=32).contains(&ln) || r == 0 || lanes == 0 || hash.len() < 10 || hash.len() > 64 {
        return Err(bad);
    }
    let memory = 128u64.saturating_mul(r).saturating_mul(1u64 << ln);
    if memory > MAX_MEMORY_BYTES || lanes > u64::from(MAX_LANES) || r > 64 {
        return Err(HashError::TooCostly(
            "scrypt",
            "128·r·2^ln ≤ 256 MiB, p ≤ 16",
        ));
    }
    let (log_n, r, p) = (ln as u8, r as u32, lanes as u32);
    let params = scrypt::Params::new(log_n, r, p, hash.len()).map_err(|_| bad)?;
    Ok(Scrypt {
        log_n,
        r,
        p,
        params,
        salt,
        hash,
    })
}

/// (rounds, salt, hash) of `$pbkdf2-sha256$i=N[,l=L]$salt$hash`.
fn pbkdf2_phc(stored: &str) -> Result<(u32, Vec<u8>, Vec<u8>), HashError> {
    let bad = HashError::Malformed("pbkdf2-sha256");
    let p = phc(stored, "pbkdf2-sha256").ok_or(bad.clone())?;
    let rounds = p.number("i").ok_or(bad.clone())?;
    let (Some(salt), Some(hash)) = (b64(p.salt), b64(p.hash)) else {
        return Err(bad);
    };
    if p.number("l").is_some_and(|l| l != hash.len() as u64) {
        return Err(bad);
    }
    rounds_ok(rounds, hash.len(), "pbkdf2-sha256")?;
    Ok((rounds as u32, salt, hash))
}

/// (rounds, salt, hash) of Django's `pbkdf2_sha256$N$salt$base64(hash)`; the salt is used as
/// its text.
fn django(stored: &str) -> Result<(u32, Vec<u8>, Vec<u8>), HashError> {
    let kind = Kind::DjangoPbkdf2Sha256.as_str();
    let bad = HashError::Malformed(kind);
    let mut parts = stored.split('$');
    let (Some("pbkdf2_sha256"), Some(rounds), Some(salt), Some(hash), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(bad);
    };
    let rounds: u64 = rounds.parse().map_err(|_| bad.clone())?;
    let hash = STANDARD.decode(hash).map_err(|_| bad.clone())?;
    if salt.is_empty() {
        return Err(bad);
    }
    rounds_ok(rounds, hash.len(), kind)?;
    Ok((rounds as u32, salt.as_bytes().to_vec(), hash))
}

fn rounds_ok(rounds: u64, len: usize, kind: &'static str) -> Result<(), HashError> {
    if rounds == 0 || !(16..=64).contains(&len) {
        return Err(HashError::Malformed(kind));
    }
    if rounds > u64::from(PBKDF2_MAX_ROUNDS) {
        return Err(HashError::TooCostly(kind, "at most 10,000,000 rounds"));
    }
    Ok(())
}

fn pbkdf2_matches(password: &str, (rounds, salt, hash): (u32, Vec<u8>, Vec<u8>)) -> bool {
    let mut out = vec![0u8; hash.len()];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, rounds, &mut out);
    bool::from(out.ct_eq(&hash))
}

/// Whether `password` matches `stored`, in any understood format. Blocking (it is the slow
/// part on purpose): run it off the async workers. A malformed or unknown hash never matches.
pub fn verify_blocking(password: &str, stored: &str) -> bool {
    let Ok(kind) = kind_of(stored) else {
        return false;
    };
    match kind {
        Kind::Argon2id | Kind::Argon2i => argon2::PasswordHash::new(stored).is_ok_and(|mut h| {
            // Without `v=`, the reference implementation (libargon2, which older libraries
            // wrote such hashes with) reads version 0x10; the argon2 crate would run 0x13, and
            // the right password would never match.
            h.version.get_or_insert(0x10);
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        }),
        Kind::Bcrypt => bcrypt::verify(password, stored).unwrap_or(false),
        Kind::Scrypt => scrypt_params(stored).is_ok_and(|s| {
            let mut out = vec![0u8; s.hash.len()];
            scrypt::scrypt(password.as_bytes(), &s.salt, &s.params, &mut out).is_ok()
                && bool::from(out.ct_eq(&s.hash))
        }),
        Kind::Pbkdf2Sha256 => pbkdf2_phc(stored).is_ok_and(|p| pbkdf2_matches(password, p)),
        Kind::DjangoPbkdf2Sha256 => django(stored).is_ok_and(|p| pbkdf2_matches(password, p)),
    }
}

/// Whether a hash that verified should be replaced by a fresh argon2id one: any other format,
/// or argon2id with other costs than this server's (an imported one: cheap to crack offline if
/// lower, a costly turn for every wrong guess if higher).
pub fn needs_rehash(stored: &str) -> bool {
    let ours = argon2::Params::default();
    kind_of(stored) != Ok(Kind::Argon2id)
        || argon2::PasswordHash::new(stored)
            .ok()
            .and_then(|h| h.version)
            != Some(argon2::Version::V0x13.into())
        || argon2_costs(stored, Kind::Argon2id).ok()
            != Some((
                u64::from(ours.m_cost()),
                u64::from(ours.t_cost()),
                u64::from(ours.p_cost()),
            ))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made with Python's bcrypt, argon2-cffi, hashlib and Django's hasher for "hunter2-hunter2".
    const PASSWORD: &str = "hunter2-hunter2";

    #[test]
    fn bounded_costs_are_refused_before_anything_runs() {
        assert!(matches!(
            kind_of("$2b$31$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234"),
            Err(HashError::TooCostly(..) | HashError::Malformed(_))
        ));
        assert_eq!(
            kind_of("pbkdf2_sha256$4000000000$salt$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            Err(HashError::TooCostly(
                "django pbkdf2_sha256",
                "at most 10,000,000 rounds"
            ))
        );
        assert!(matches!(
            kind_of(
                "$scrypt$ln=30,r=8,p=1$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            ),
            Err(HashError::TooCostly(..))
        ));
        // Each bound on its own, and the time: a verification of these would take seconds.
        let bcrypt_15 = bcrypt::hash(PASSWORD, 4)
            .unwrap()
            .replacen("$04$", "$15$", 1);
        let costly = [
            bcrypt_15.as_str(),
            "$argon2id$v=19$m=262144,t=16,p=1$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "$scrypt$ln=18,r=8,p=16$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ];
        for hash in costly {
            assert!(kind_of(hash).is_ok(), "a stored one verifies: {hash}");
            assert!(
                matches!(importable(hash), Err(HashError::TooCostly(..))),
                "{hash}"
            );
        }
        // A cost given twice: argon2 runs the last, so a check of the first would pass hours of
        // work (t) or gigabytes (m) through, on an import and at every sign-in after it. An
        // unknown parameter or a missing one is malformed too.
        for twice in [
            "$argon2id$v=19$m=8,t=1,p=1,t=4294967295$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "$argon2id$v=19$m=8,t=1,p=1,m=3145728$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "$argon2i$v=19$m=8,t=1,p=1,p=1$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "$argon2id$v=19$m=8,t=1,p=1,keyid=AAAA$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "$argon2id$v=19$m=8,t=1$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "$scrypt$ln=4,r=8,p=1,ln=30$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            // Not one of argon2's two versions (0x10 and 0x13): it imported, then never verified.
            "$argon2id$v=20$m=8,t=1,p=1$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "$argon2i$v=0$m=8,t=1,p=1$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(kind_of(twice).is_err(), "{twice}");
            assert!(importable(twice).is_err(), "{twice}");
        }
        // A corrupted bcrypt body (a character outside its base64), a NUL anywhere.
        let bcrypt_ok = bcrypt::hash(PASSWORD, 4).unwrap();
        assert_eq!(kind_of(&bcrypt_ok), Ok(Kind::Bcrypt));
        let body =
            |h: &str, from: char, to: &str| format!("{}{}", &h[..7], h[7..].replacen(from, to, 1));
        let first = bcrypt_ok[7..].chars().next().unwrap();
        for bad in [
            body(&bcrypt_ok, first, "!"),
            body(&bcrypt_ok, first, "\0"),
            "pbkdf2_sha256$1000$Qx7ab\0dEFG12$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(),
        ] {
            assert!(kind_of(&bad).is_err(), "{bad:?}");
            assert!(importable(&bad).is_err(), "{bad:?}");
        }
        for junk in ["", "plain", "$md5$x", "$2b$10$short", "pbkdf2_sha256$1$$x"] {
            assert!(kind_of(junk).is_err(), "{junk}");
            assert!(!verify_blocking(PASSWORD, junk));
        }
        // Within every bound above, but a hash scrypt itself refuses to run (ln ≥ 16·r): it
        // imported, then never verified (its user locked out of password sign-in).
        let never = "$scrypt$ln=16,r=1,p=1$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert_eq!(importable(never), Err(HashError::Malformed("scrypt")));
        // PBKDF2 runs its rounds again for each 32 bytes of the hash: 2,000,000 rounds of a
        // 64-byte hash are twice the bound's work.
        let sixty_four = format!(
            "$pbkdf2-sha256$i=2000000,l=64$c2FsdHNhbHQ${}",
            "A".repeat(86)
        );
        assert_eq!(kind_of(&sixty_four), Ok(Kind::Pbkdf2Sha256));
        assert!(
            matches!(importable(&sixty_four), Err(HashError::TooCostly(..))),
            "{sixty_four}"
        );
        let thirty_two = format!(
            "$pbkdf2-sha256$i=2000000,l=32$c2FsdHNhbHQ${}",
            "A".repeat(43)
        );
        assert_eq!(importable(&thirty_two), Ok(Kind::Pbkdf2Sha256));
    }

    #[test]
    fn every_format_verifies_the_right_password_and_only_it() {
        let made_here = crate::password::hash_blocking(PASSWORD).unwrap();
        let django = {
            let mut out = [0u8; 32];
            pbkdf2::pbkdf2_hmac::<Sha256>(PASSWORD.as_bytes(), b"abcdefgh", 1000, &mut out);
            format!("pbkdf2_sha256$1000$abcdefgh${}", STANDARD.encode(out))
        };
        let phc_pbkdf2 = {
            let mut out = [0u8; 32];
            pbkdf2::pbkdf2_hmac::<Sha256>(PASSWORD.as_bytes(), b"saltsaltsalt", 1000, &mut out);
            format!(
                "$pbkdf2-sha256$i=1000,l=32${}${}",
                STANDARD_NO_PAD.encode(b"saltsaltsalt"),
                STANDARD_NO_PAD.encode(out)
            )
        };
        let scrypt = {
            let params = scrypt::Params::new(10, 8, 1, 32).unwrap();
            let mut out = [0u8; 32];
            scrypt::scrypt(PASSWORD.as_bytes(), b"saltsalt", &params, &mut out).unwrap();
            format!(
                "$scrypt$ln=10,r=8,p=1${}${}",
                STANDARD_NO_PAD.encode(b"saltsalt"),
                STANDARD_NO_PAD.encode(out)
            )
        };
        let bcrypt = bcrypt::hash(PASSWORD, 4).unwrap();
        // Version 0x10 (`v=16`), and the same hash without its version field, as libargon2 and
        // the libraries built on it wrote them before 0x13: the reference reads it as 0x10.
        let argon2_v16 = {
            use argon2::password_hash::PasswordHasher;
            // The server's own costs: only the version makes it one to rehash.
            let params = argon2::Params::default();
            let a = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x10, params);
            let h: argon2::PasswordHash = a
                .hash_password_with_salt(PASSWORD.as_bytes(), b"saltsaltsalt")
                .unwrap();
            h.to_string()
        };
        assert!(argon2_v16.contains("$v=16$"), "{argon2_v16}");
        let argon2_unversioned = argon2_v16.replace("$v=16$", "$");
        for stored in [&argon2_v16, &argon2_unversioned] {
            assert_eq!(kind_of(stored), Ok(Kind::Argon2id), "{stored}");
            assert!(verify_blocking(PASSWORD, stored), "{stored}");
            assert!(!verify_blocking("hunter2-hunter3", stored), "{stored}");
            assert!(needs_rehash(stored), "{stored}");
        }
        let cases = [
            (made_here.as_str(), Kind::Argon2id),
            (django.as_str(), Kind::DjangoPbkdf2Sha256),
            (phc_pbkdf2.as_str(), Kind::Pbkdf2Sha256),
            (scrypt.as_str(), Kind::Scrypt),
            (bcrypt.as_str(), Kind::Bcrypt),
        ];
        for (stored, kind) in cases {
            assert_eq!(kind_of(stored), Ok(kind), "{stored}");
            assert!(verify_blocking(PASSWORD, stored), "{stored}");
            assert!(!verify_blocking("hunter2-hunter3", stored), "{stored}");
            assert_eq!(needs_rehash(stored), kind != Kind::Argon2id);
        }
        // $2y$ and $2a$ are bcrypt too (PHP, older libraries).
        let y = bcrypt.replacen("$2b$", "$2y$", 1);
        assert_eq!(kind_of(&y), Ok(Kind::Bcrypt));
        assert!(verify_blocking(PASSWORD, &y));
    }
}
