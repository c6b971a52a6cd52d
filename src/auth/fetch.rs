//! Fetching the issuer's metadata (RFC 8414, then OpenID discovery) and its JWK set over HTTPS
//! (rustls; `auth.ca_file` or the system's roots), or HTTP on loopback. Bounded in time and size.

use super::KeySet;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(5);
const MAX_DOCUMENT: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}: not an http(s) URL")]
    Url(String),
    #[error("cannot read auth.ca_file {path}: {why}")]
    Ca { path: String, why: String },
    #[error("{url}: {why}")]
    Get { url: String, why: String },
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: {why}")]
    Document { url: String, why: String },
    #[error("no metadata for issuer {issuer} (tried {tried})")]
    NoMetadata { issuer: String, tried: String },
}

struct Url<'a> {
    tls: bool,
    host: &'a str,
    port: u16,
    path: &'a str,
}

fn parse(url: &str) -> Result<Url<'_>, FetchError> {
    let bad = || FetchError::Url(url.to_string());
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(bad());
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
            (h, p.parse().map_err(|_| bad())?)
        }
        _ => (authority, if tls { 443 } else { 80 }),
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok(Url {
        tls,
        host: host.trim_start_matches('[').trim_end_matches(']'),
        port,
        path,
    })
}

/// The roots an issuer's certificate must chain to.
fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, FetchError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            use rustls::pki_types::pem::PemObject;
            let ca = |why: String| FetchError::Ca {
                path: path.display().to_string(),
                why,
            };
            let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| ca(e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| ca(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca("no certificate in it".into()));
            }
            for c in certs {
                roots.add(c).map_err(|e| ca(e.to_string()))?;
            }
        }
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| FetchError::Ca {
            path: "-".into(),
            why: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

async fn get(url: &str, tls: &Arc<rustls::ClientConfig>) -> Result<serde_json::Value, FetchError> {
    let u = parse(url)?;
    let failed = |why: String| FetchError::Get {
        url: url.to_string(),
        why,
    };
    let fetch = async {
        let tcp = tokio::net::TcpStream::connect((u.host, u.port))
            .await
            .map_err(|e| failed(e.to_string()))?;
        let authority = if (u.tls && u.port == 443) || (!u.tls && u.port == 80) {
            u.host.to_string()
        } else {
            format!("{}:{}", u.host, u.port)
        };
        let request = http::Request::get(u.path)
            .header(http::header::HOST, authority)
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, "mcp-fleet")
            .body(Empty::<Bytes>::new())
            .map_err(|e| failed(e.to_string()))?;
        let response = if u.tls {
            let name = rustls::pki_types::ServerName::try_from(u.host.to_string())
                .map_err(|e| failed(e.to_string()))?;
            let stream = tokio_rustls::TlsConnector::from(Arc::clone(tls))
                .connect(name, tcp)
                .await
                .map_err(|e| failed(format!("TLS: {e}")))?;
            send(TokioIo::new(stream), request).await
        } else {
            send(TokioIo::new(tcp), request).await
        }
        .map_err(failed)?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(FetchError::Status {
                url: url.to_string(),
                status,
            });
        }
        let body = Limited::new(response.into_body(), MAX_DOCUMENT)
            .collect()
            .await
            .map_err(|e| failed(e.to_string()))?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| FetchError::Document {
            url: url.to_string(),
            why: format!("not JSON: {e}"),
        })
    };
    tokio::time::timeout(TIMEOUT, fetch)
        .await
        .map_err(|_| failed(format!("no answer within {TIMEOUT:?}")))?
}

async fn send<T>(
    io: TokioIo<T>,
    request: http::Request<Empty<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())
}

/// Where the issuer's metadata may be: RFC 8414 (the well-known segment before the issuer's
/// path), then OpenID Connect Discovery (after it).
fn metadata_urls(issuer: &str) -> Vec<String> {
    vec![
        super::well_known(issuer, "/.well-known/oauth-authorization-server"),
        format!("{issuer}/.well-known/openid-configuration"),
    ]
}

/// Fine for a key set: `https://`, or `http://` on loopback (as the issuer itself).
fn fetchable(url: &str) -> bool {
    url.starts_with("https://") || crate::config::loopback_http_url(url)
}

/// The issuer's current signing keys.
pub async fn key_set(issuer: &str, ca_file: Option<&Path>) -> Result<KeySet, FetchError> {
    let tls = client_config(ca_file)?;
    let mut metadata = None;
    let urls = metadata_urls(issuer);
    for url in &urls {
        match get(url, &tls).await {
            Ok(doc) => {
                metadata = Some((url.clone(), doc));
                break;
            }
            Err(FetchError::Status { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    let Some((url, doc)) = metadata else {
        return Err(FetchError::NoMetadata {
            issuer: issuer.to_string(),
            tried: urls.join(", "),
        });
    };
    let named = doc.get("issuer").and_then(|i| i.as_str()).unwrap_or("");
    // RFC 8414 section 3.3: metadata naming another issuer must not be used.
    if named.trim_end_matches('/') != issuer.trim_end_matches('/') {
        return Err(FetchError::Document {
            url,
            why: format!("names issuer {named:?}, not {issuer:?}"),
        });
    }
    let Some(jwks_uri) = doc.get("jwks_uri").and_then(|u| u.as_str()) else {
        return Err(FetchError::Document {
            url,
            why: "no jwks_uri".into(),
        });
    };
    if !fetchable(jwks_uri) {
        return Err(FetchError::Document {
            url,
            why: format!("jwks_uri {jwks_uri:?} is neither https:// nor on loopback"),
        });
    }
    let jwks = get(jwks_uri, &tls).await?;
    let (set, skipped) = KeySet::from_document(&jwks).map_err(|why| FetchError::Document {
        url: jwks_uri.to_string(),
        why: why.into(),
    })?;
    if skipped > 0 {
        tracing::debug!(
            skipped,
            "keys of the issuer's set not usable for signatures"
        );
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_looked_for_where_both_standards_put_it() {
        assert_eq!(
            metadata_urls("https://idp.example.com"),
            [
                "https://idp.example.com/.well-known/oauth-authorization-server",
                "https://idp.example.com/.well-known/openid-configuration"
            ]
        );
        assert_eq!(
            metadata_urls("https://idp.example.com/tenant/1"),
            [
                "https://idp.example.com/.well-known/oauth-authorization-server/tenant/1",
                "https://idp.example.com/tenant/1/.well-known/openid-configuration"
            ]
        );
    }

    #[test]
    fn urls_are_read_with_their_ports() {
        let u = parse("http://127.0.0.1:4000/jwks").expect("url");
        assert_eq!(
            (u.tls, u.host, u.port, u.path),
            (false, "127.0.0.1", 4000, "/jwks")
        );
        let u = parse("https://idp.example.com").expect("url");
        assert_eq!((u.tls, u.port, u.path), (true, 443, "/"));
        let u = parse("http://[::1]:81/x").expect("url");
        assert_eq!((u.host, u.port), ("::1", 81));
        assert!(!fetchable("http://10.0.0.1/jwks"));
        assert!(fetchable("http://localhost:9/jwks"));
    }
}
