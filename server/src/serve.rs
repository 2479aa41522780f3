//! The accept loop: HTTP/1.1 over hyper, plain or over TLS (rustls), graceful shutdown,
//! connection hygiene (a header-read timeout, an idle timeout, a cap on open connections), and
//! the one thing `axum::serve` cannot do: close a connection without answering (the "lost
//! response" test hook).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{ServerConfig, crypto::ring};
use tower::ServiceExt;

pub use crate::config::{ConnectionLimits, Proxies};

/// A client that opens a connection and never finishes the TLS handshake is dropped after this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The most a request's head (its line and headers) may take (hyper's `max_header_size`): a
/// larger one is refused with 431. A client of ours sends a few KiB at most (an access token
/// with 4 KiB of custom claims, a DPoP proof, the refresh cookie); an app's own cookies on the
/// auth server's origin are the rest.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// A response extension: drop the connection instead of sending this response.
#[derive(Clone, Copy, Debug)]
pub struct DropConnection;

#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose")
    }
}

impl std::error::Error for Dropped {}

/// A stream that records when a byte last moved, either way.
struct Watched {
    inner: TcpStream,
    start: Instant,
    /// Milliseconds after `start`.
    last: Arc<AtomicU64>,
}

impl Watched {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        res
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        res
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Resolves once no byte has moved for `idle`.
async fn idle_for(start: Instant, last: Arc<AtomicU64>, idle: Duration) {
    loop {
        let since = Duration::from_millis(last.load(Ordering::Relaxed));
        let quiet = start.elapsed().saturating_sub(since);
        if quiet >= idle {
            return;
        }
        tokio::time::sleep(idle - quiet).await;
    }
}

/// A TLS acceptor from a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1 or SEC1).
/// HTTP/1.1 only, TLS 1.2 and 1.3, rustls' safe defaults.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("reading the certificate {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("reading the private key {}: {e}", key.display()))?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `app` until `shutdown` resolves, then lets open requests finish (at most 10 s).
///
/// - at most `limits.max_connections` connections are served at once; the next is accepted
///   only when one closes (meanwhile it waits in the kernel's listen backlog);
/// - a request's headers must arrive within `limits.header_read_timeout` (hyper starts the
///   clock when it starts waiting for them, so an idle kept-alive connection is closed then);
/// - a connection on which nothing moves for `limits.idle_timeout` (a stalled upload, a
///   client that stops reading) is closed;
/// - at most `limits.max_per_client` connections of one client address bucket (an IPv4
///   address, an IPv6 /64; the addresses `proxies` trusts uncounted) are served at once: one
///   more from it is closed at once, so one address cannot hold every slot.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    proxies: Proxies,
    shutdown: impl Future<Output = ()>,
) {
    serve_with(listener, None, app, limits, proxies, shutdown).await;
}

/// `serve`, with every connection over TLS (the handshake must finish within 10 s).
pub async fn serve_tls(
    listener: TcpListener,
    tls: TlsAcceptor,
    app: Router,
    limits: ConnectionLimits,
    proxies: Proxies,
    shutdown: impl Future<Output = ()>,
) {
    serve_with(listener, Some(tls), app, limits, proxies, shutdown).await;
}

async fn serve_with(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: ConnectionLimits,
    proxies: Proxies,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let clients = Arc::new(PerClient {
        max: limits.max_per_client.max(1),
        proxies,
        open: std::sync::Mutex::default(),
    });
    let mut http = http1::Builder::new();
    // A request's head within [`MAX_HEAD_BYTES`] (hyper's own bound is about 400 KiB a
    // connection: a thousand connections each holding one took 400 MB).
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(MAX_HEAD_BYTES);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(client) = PerClient::enter(&clients, peer.ip()) else {
            tracing::debug!(%peer, "closing a connection beyond the per-client cap");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let start = Instant::now();
        let last = Arc::new(AtomicU64::new(0));
        let io = Watched {
            inner: stream,
            start,
            last: last.clone(),
        };
        let (app, tls, http, watcher) =
            (app.clone(), tls.clone(), http.clone(), graceful.watcher());
        let idle = limits.idle_timeout;
        tokio::spawn(async move {
            let serving = async move {
                match tls {
                    None => connection(io, peer, app, http, watcher).await,
                    Some(tls) => {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(io)).await {
                            Ok(Ok(io)) => connection(io, peer, app, http, watcher).await,
                            // A failed handshake (e.g. a browser refusing a self-signed
                            // certificate) is the client's business: nothing to serve.
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, %peer, "TLS handshake failed")
                            }
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    }
                }
            };
            tokio::select! {
                () = serving => {}
                () = idle_for(start, last, idle) => {
                    tracing::debug!(%peer, "closing a connection idle for {idle:?}");
                }
            }
            drop(client);
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(10)) => {
            tracing::warn!("connections still open after 10 s; closing them");
        }
    }
}

/// The connections open per client address bucket.
struct PerClient {
    max: usize,
    proxies: Proxies,
    open: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// One connection counted for its client: uncounted when dropped.
struct Counted {
    clients: Arc<PerClient>,
    bucket: Option<std::net::IpAddr>,
}

impl PerClient {
    /// Counts a connection from `ip`; `None` when its bucket holds `max` already.
    fn enter(clients: &Arc<PerClient>, ip: std::net::IpAddr) -> Option<Counted> {
        let bucket = if clients.proxies.trusts(ip) {
            None
        } else {
            let bucket = crate::net::bucket(ip);
            let mut open = clients.open.lock().unwrap_or_else(|p| p.into_inner());
            let n = open.entry(bucket).or_insert(0);
            if *n >= clients.max {
                return None;
            }
            *n += 1;
            Some(bucket)
        };
        Some(Counted {
            clients: clients.clone(),
            bucket,
        })
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let Some(bucket) = self.bucket else { return };
        let mut open = self.clients.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&bucket) {
            *n -= 1;
            if *n == 0 {
                open.remove(&bucket);
            }
        }
    }
}

/// One HTTP/1.1 connection, plain or TLS.
async fn connection<S>(
    stream: S,
    peer: SocketAddr,
    app: Router,
    http: http1::Builder,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
        let app = app.clone();
        async move {
            let res = app
                .oneshot(req.map(Body::new))
                .await
                .unwrap_or_else(|e: Infallible| match e {});
            if res.extensions().get::<DropConnection>().is_some() {
                return Err(Dropped);
            }
            Ok(res)
        }
    });
    let _ = watcher
        .watch(http.serve_connection(TokioIo::new(stream), service))
        .await;
}

#[cfg(test)]
mod tests {
    use super::tls_acceptor;

    fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn bad_tls_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let empty = file(&dir, "empty.pem", "");
        let garbage = file(
            &dir,
            "garbage.pem",
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        );
        let err = tls_acceptor(&missing, &missing).err().unwrap();
        assert!(err.starts_with("reading the certificate"), "{err}");
        let err = tls_acceptor(&empty, &empty).err().unwrap();
        assert!(err.starts_with("no certificate in"), "{err}");
        let err = tls_acceptor(&garbage, &garbage).err().unwrap();
        assert!(err.starts_with("reading the certificate"), "{err}");
    }
}
