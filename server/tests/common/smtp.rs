//! A real SMTP server in its own process: aiosmtpd (Python), writing every message it receives
//! into a Maildir that the tests read. `scripts/setup.sh` installs it (Debian's
//! python3-aiosmtpd); `TW_PYTHON` names another interpreter that has it.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct SmtpSink {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

/// One delivered message, as the sink stored it.
#[derive(Debug, Clone)]
pub struct Mail {
    pub raw: String,
}

impl Mail {
    /// The `To:` header's value.
    pub fn to(&self) -> String {
        self.header("To: ")
    }

    /// The `Subject:` header's value.
    pub fn subject(&self) -> String {
        self.header("Subject: ")
    }

    /// The value of the first line that starts with `name`.
    fn header(&self, name: &str) -> String {
        self.raw
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// The code: the plain-text part's line that is nothing but 6 to 8 digits.
    pub fn code(&self) -> String {
        self.raw
            .lines()
            .map(str::trim)
            .find(|l| (6..=8).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_digit()))
            .unwrap_or_else(|| panic!("no code in the message:\n{}", self.raw))
            .to_owned()
    }
}

fn python() -> String {
    std::env::var("TW_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into())
}

impl SmtpSink {
    /// Starts aiosmtpd on a free loopback port and waits until it accepts connections.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("maildir");
        let maildir = dir.path().join("Maildir");
        for _ in 0..5 {
            // Below the ephemeral range: a port the kernel hands to a `bind(0)` (every test
            // server's) could be taken before aiosmtpd binds it, and answer its readiness check.
            let port = super::oidc::free_port();
            let mut child = Command::new(python())
                .args(["-m", "aiosmtpd", "-n", "-l"])
                .arg(format!("127.0.0.1:{port}"))
                .args(["-c", "aiosmtpd.handlers.Mailbox"])
                .arg(&maildir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start aiosmtpd (scripts/setup.sh installs python3-aiosmtpd)");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return SmtpSink { child, port, dir };
                }
                if let Ok(Some(status)) = child.try_wait() {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        use std::io::Read;
                        let _ = e.read_to_string(&mut err);
                    }
                    if err.contains("No module named") {
                        panic!("aiosmtpd is not installed for {}: {err}", python());
                    }
                    eprintln!("aiosmtpd exited ({status}), trying another port: {err}");
                    break;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("aiosmtpd did not start");
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    fn maildir_new(&self) -> PathBuf {
        self.dir.path().join("Maildir").join("new")
    }

    /// Every message delivered so far, oldest first.
    pub fn all(&self) -> Vec<Mail> {
        read_maildir(&self.maildir_new())
    }

    /// Messages to `to`, oldest first.
    pub fn to(&self, to: &str) -> Vec<Mail> {
        self.all().into_iter().filter(|m| m.to() == to).collect()
    }

    /// Waits (up to 10 s) until `to` has `n` messages; returns the newest.
    pub async fn wait_for(&self, to: &str, n: usize) -> Mail {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mails = self.to(to);
            if mails.len() >= n {
                assert_eq!(mails.len(), n, "more messages to {to} than expected");
                return mails[n - 1].clone();
            }
            assert!(
                Instant::now() < deadline,
                "message {n} to {to} did not arrive (have {})",
                mails.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn read_maildir(dir: &Path) -> Vec<Mail> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(std::time::SystemTime, String, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .map(|e| {
            let modified = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (
                modified,
                e.file_name().to_string_lossy().into_owned(),
                e.path(),
            )
        })
        .collect();
    // Maildir names start with the delivery time: with the mtime, oldest first.
    files.sort();
    files
        .into_iter()
        .filter_map(|(_, _, p)| std::fs::read_to_string(p).ok())
        .map(|raw| Mail { raw })
        .collect()
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
