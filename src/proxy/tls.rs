//! TLS at the listener (`[proxy.tls]`): rustls (no OpenSSL), HTTP/1.1 and HTTP/2 by ALPN. The
//! certificate is held behind an `ArcSwap` that a reload replaces, so a renewed pair serves the
//! next handshake while open connections keep theirs. The gate runs the handshake and hands
//! both engines a [`TlsIo`]: to them it is a connection like any other.

use crate::config::TlsConfig;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("proxy.tls.cert {path}: {why}")]
    Cert { path: String, why: String },
    #[error("proxy.tls.key {path}: {why}")]
    Key { path: String, why: String },
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks a certificate pair: the chain parses, the key parses and matches the
/// first certificate.
pub fn load_pair(config: &TlsConfig) -> Result<CertifiedKey, TlsError> {
    let cert_err = |why: String| TlsError::Cert {
        path: config.cert.display().to_string(),
        why,
    };
    let key_err = |why: String| TlsError::Key {
        path: config.key.display().to_string(),
        why,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&config.cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_err("no certificate in it".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&config.key).map_err(|e| key_err(e.to_string()))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| key_err(e.to_string()))
}

/// When the pair's certificate stops being valid.
pub fn not_after(key: &CertifiedKey) -> Option<SystemTime> {
    let der = key.cert.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let secs = cert.validity().not_after.timestamp();
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// The certificate in force, swapped whole by a reload.
#[derive(Debug)]
pub struct Certs {
    current: ArcSwap<CertifiedKey>,
}

impl Certs {
    pub fn new(key: CertifiedKey) -> Self {
        Self {
            current: ArcSwap::from_pointee(key),
        }
    }

    pub fn install(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }

    /// Whether `key` is the certificate in force already (a reload that re-reads the same files
    /// changes nothing).
    pub fn holds(&self, key: &CertifiedKey) -> bool {
        self.current.load().cert == key.cert
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The acceptor for the listener: HTTP/2 preferred, HTTP/1.1 otherwise.
pub fn acceptor(certs: Arc<Certs>) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Cert {
            path: "-".into(),
            why: e.to_string(),
        })?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The reload step of `[proxy.tls]`: the files at the running paths are read again; a pair
/// that does not load refuses the reload (the old certificate keeps serving).
pub struct TlsReload(pub Arc<Certs>);

impl crate::reload::Reread for TlsReload {
    fn load(
        &self,
        config: &crate::config::ValidConfig,
    ) -> Result<Option<crate::reload::Commit>, String> {
        let Some(tls) = &config.proxy.tls else {
            return Ok(None);
        };
        let key = load_pair(tls).map_err(|e| e.to_string())?;
        if self.0.holds(&key) {
            return Ok(None);
        }
        let certs = Arc::clone(&self.0);
        Ok(Some(Box::new(move || {
            let until = not_after(&key);
            certs.install(key);
            match until {
                Some(t) => format!(
                    "TLS certificate renewed (valid for {} more days)",
                    t.duration_since(SystemTime::now())
                        .map_or(0, |d| d.as_secs() / 86_400)
                ),
                None => "TLS certificate renewed".into(),
            }
        })))
    }
}

/// A client connection after its TLS handshake, as Pingora's engines take connections. Bytes
/// given back by the gate (`rewind`) are read again first.
pub struct TlsIo {
    inner: tokio_rustls::server::TlsStream<Stream>,
    rewound: Vec<u8>,
    alpn: Option<ALPN>,
}

impl std::fmt::Debug for TlsIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIo").field("alpn", &self.alpn).finish()
    }
}

impl TlsIo {
    pub fn new(inner: tokio_rustls::server::TlsStream<Stream>) -> Self {
        let alpn = match inner.get_ref().1.alpn_protocol() {
            Some(b"h2") => Some(ALPN::H2),
            Some(b"http/1.1") => Some(ALPN::H1),
            _ => None,
        };
        Self {
            inner,
            rewound: Vec::new(),
            alpn,
        }
    }

    /// Puts bytes already read back in front of what comes next.
    pub fn rewind(&mut self, bytes: &[u8]) {
        let mut v = bytes.to_vec();
        v.extend_from_slice(&self.rewound);
        self.rewound = v;
    }
}

impl AsyncRead for TlsIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.rewound.is_empty() {
            let n = self.rewound.len().min(buf.remaining());
            buf.put_slice(&self.rewound[..n]);
            self.rewound.drain(..n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for TlsIo {
    async fn shutdown(&mut self) {
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut self.inner).await;
    }
}

impl UniqueID for TlsIo {
    fn id(&self) -> UniqueIDType {
        self.inner.get_ref().0.id()
    }
}

impl Ssl for TlsIo {
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.alpn.clone()
    }
}

impl GetTimingDigest for TlsIo {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_ref().0.get_timing_digest()
    }
}

impl GetProxyDigest for TlsIo {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        None
    }
}

impl GetSocketDigest for TlsIo {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_ref().0.get_socket_digest()
    }
}

#[async_trait]
impl Peek for TlsIo {}
