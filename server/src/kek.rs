//! Signing keys at rest: the private key of every signing key is sealed before it reaches the
//! database, with a key-encryption key (KEK) that never does.
//!
//! [`KeyWrap`] is the seam: the server only calls `seal` and `open`. [`LocalKek`] implements it
//! with XChaCha20-Poly1305 and a 32-byte key from the environment (`TW_KEY_ENCRYPTION_KEY`) or
//! a file (`--key-encryption-key-file`). A KMS implements the same two calls (envelope
//! encryption: `seal` asks the KMS to encrypt, or to wrap a data key) and is passed to
//! `Keys::new` instead.
//!
//! Sealed format: `twk1` ‖ 24-byte nonce ‖ ciphertext ‖ 16-byte tag, the `kid` bound as
//! associated data, so a sealed key copied onto another row does not open.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

const MAGIC: &[u8; 4] = b"twk1";
const NONCE: usize = 24;

/// Seals and opens signing keys.
pub trait KeyWrap: Send + Sync {
    fn seal(&self, kid: &str, private_key: &[u8]) -> Result<Vec<u8>, String>;
    fn open(&self, kid: &str, sealed: &[u8]) -> Result<Vec<u8>, String>;
}

/// Whether a stored private key is sealed (older databases stored PKCS#8 DER in the clear).
pub fn is_sealed(stored: &[u8]) -> bool {
    stored.starts_with(MAGIC)
}

/// A KEK held in memory.
pub struct LocalKek {
    cipher: XChaCha20Poly1305,
}

/// The most a secret's file may hold (a URL with its password is the longest secret read).
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// Reads a file holding a secret (a key, a token, a shared secret), with a warning in the log
/// when others than its owner may read it. An error names the file. A regular file (a symlink
/// to one, as Kubernetes mounts them) of at most 64 KiB: a FIFO held start-up for good, and a
/// device (`/dev/zero`) or a huge file took memory until the process died.
pub fn read_secret_file(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let named = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    // Checked before opening it: opening a FIFO waits for a writer.
    let meta = std::fs::metadata(path).map_err(|e| named(&e))?;
    if !meta.is_file() {
        return Err(named(&"not a regular file"));
    }
    let file = std::fs::File::open(path).map_err(|e| named(&e))?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| named(&e))?;
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(named(&"over 64 KiB: not a secret's file"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %path.display(), "a secret's file is readable by others than its owner; chmod 600 it");
        }
    }
    Ok(bytes)
}

/// As [`read_secret_file`], as text without surrounding white space.
pub fn read_secret_text(path: &Path) -> Result<String, String> {
    let bytes = read_secret_file(path)?;
    let text =
        String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8 text", path.display()))?;
    Ok(text.trim().to_owned())
}

impl LocalKek {
    pub fn new(key: [u8; 32]) -> Self {
        LocalKek {
            cipher: XChaCha20Poly1305::new(&key.into()),
        }
    }

    /// A random key for a database that does not outlive the process (`sqlite::memory:`).
    pub fn ephemeral() -> Self {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        LocalKek::new(key)
    }

    /// 32 bytes as base64 (standard or URL-safe, padded or not).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let engines = [
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::STANDARD_NO_PAD,
            &base64::engine::general_purpose::URL_SAFE,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        for engine in engines {
            if let Ok(bytes) = engine.decode(text)
                && let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice())
            {
                return Ok(LocalKek::new(key));
            }
        }
        Err(
            "the key-encryption key must be 32 bytes (base64, e.g. `openssl rand -base64 32`)"
                .into(),
        )
    }

    pub fn from_file(path: &Path) -> Result<Self, String> {
        let bytes = read_secret_file(path).map_err(|e| format!("reading {e}"))?;
        // A file may hold the 32 raw bytes; anything else is base64 text. Thirty-two printable
        // characters are text, as in the environment (a passphrase that long is no key; 32
        // random bytes are all printable less than once in 10^13).
        if let Ok(raw) = <[u8; 32]>::try_from(bytes.as_slice())
            && !raw.iter().all(|b| b.is_ascii_graphic() || *b == b' ')
        {
            return Ok(LocalKek::new(raw));
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| format!("{}: neither 32 raw bytes nor base64", path.display()))?;
        LocalKek::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Reads the key file, creating it (0600, random key) if it does not exist: `--demo` only.
    pub fn from_file_or_create(path: &Path) -> Result<Self, String> {
        if !path.exists() {
            let mut key = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut key);
            let text = base64::engine::general_purpose::STANDARD.encode(key);
            let mut open = std::fs::OpenOptions::new();
            open.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
            let mut file = open
                .open(path)
                .map_err(|e| format!("creating {}: {e}", path.display()))?;
            std::io::Write::write_all(&mut file, format!("{text}\n").as_bytes())
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
        }
        LocalKek::from_file(path)
    }
}

impl KeyWrap for LocalKek {
    fn seal(&self, kid: &str, private_key: &[u8]) -> Result<Vec<u8>, String> {
        let mut nonce = [0u8; NONCE];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: private_key,
                    aad: kid.as_bytes(),
                },
            )
            .map_err(|_| "sealing a signing key failed".to_owned())?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE + sealed.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn open(&self, kid: &str, sealed: &[u8]) -> Result<Vec<u8>, String> {
        let body = sealed
            .strip_prefix(MAGIC.as_slice())
            .filter(|b| b.len() > NONCE)
            .ok_or_else(|| format!("signing key {kid} is not sealed"))?;
        let (nonce, ciphertext) = body.split_at(NONCE);
        let nonce = <[u8; NONCE]>::try_from(nonce)
            .map_err(|_| format!("signing key {kid} is not sealed"))?;
        self.cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: kid.as_bytes(),
                },
            )
            .map_err(|_| {
                format!(
                    "signing key {kid} does not open with this key-encryption key \
                     (wrong TW_KEY_ENCRYPTION_KEY or key file?)"
                )
            })
    }
}

/// The configured sealer, shareable and printable without its secret.
#[derive(Clone)]
pub struct KeyEncryption(pub Arc<dyn KeyWrap>);

impl KeyEncryption {
    pub fn local(kek: LocalKek) -> Self {
        KeyEncryption(Arc::new(kek))
    }
}

impl fmt::Debug for KeyEncryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyEncryption(..)")
    }
}

impl std::ops::Deref for KeyEncryption {
    type Target = dyn KeyWrap;
    fn deref(&self) -> &(dyn KeyWrap + 'static) {
        &*self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_s_file_is_a_regular_file_of_at_most_64_kib() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok");
        std::fs::write(&ok, "a secret\n").unwrap();
        assert_eq!(read_secret_text(&ok).unwrap(), "a secret");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; 64 * 1024 + 1]).unwrap();
        assert!(read_secret_file(&big).unwrap_err().contains("over 64 KiB"));
        // A device (it never ends), a directory, a FIFO (opening it waited for a writer).
        for other in [Path::new("/dev/zero"), dir.path()] {
            let e = read_secret_file(other).unwrap_err();
            assert!(e.contains("not a regular file"), "{e}");
        }
        #[cfg(unix)]
        {
            let fifo = dir.path().join("fifo");
            let made = std::process::Command::new("mkfifo").arg(&fifo).status();
            assert!(made.unwrap().success());
            let e = read_secret_file(&fifo).unwrap_err();
            assert!(e.contains("not a regular file"), "{e}");
        }
    }

    #[test]
    fn a_sealed_key_opens_only_with_its_kek_and_its_kid() {
        let kek = LocalKek::new([7; 32]);
        let sealed = kek.seal("kid-a", b"secret pkcs8").unwrap();
        assert!(is_sealed(&sealed));
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(kek.open("kid-a", &sealed).unwrap(), b"secret pkcs8");
        assert!(kek.open("kid-b", &sealed).is_err());
        assert!(LocalKek::new([8; 32]).open("kid-a", &sealed).is_err());
        assert!(kek.open("kid-a", b"twk1short").is_err());
        assert!(kek.open("kid-a", b"\x30\x2e plaintext der").is_err());
    }

    #[test]
    fn the_kek_is_parsed_from_base64_or_raw_bytes() {
        let b64 = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        assert!(LocalKek::parse(&b64).is_ok());
        assert!(LocalKek::parse(&format!("{b64}\n")).is_ok());
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xfbu8; 32]);
        assert!(LocalKek::parse(&url).is_ok());
        assert!(LocalKek::parse("too short").is_err());
        // 32 characters of text are not 32 bytes of key.
        assert!(LocalKek::parse(&"a".repeat(32)).is_err());
        let b64 = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
        assert!(LocalKek::parse(&b64).is_err());

        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw");
        std::fs::write(&raw, [9u8; 32]).unwrap();
        assert!(LocalKek::from_file(&raw).is_ok());
        // As in the environment, 32 characters of text in a file are not 32 bytes of key.
        let phrase = dir.path().join("phrase");
        std::fs::write(&phrase, "correct horse battery staple 123").unwrap();
        assert!(LocalKek::from_file(&phrase).is_err());
        let created = dir.path().join("demo.key");
        let a = LocalKek::from_file_or_create(&created).unwrap();
        let b = LocalKek::from_file_or_create(&created).unwrap();
        let sealed = a.seal("k", b"x").unwrap();
        assert_eq!(
            b.open("k", &sealed).unwrap(),
            b"x",
            "the same key the second time"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&created).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
