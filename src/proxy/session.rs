//! Stateless session affinity. When a server mints `Mcp-Session-Id`, the client gets instead a
//! token that carries the owning server's address and the server's own id, sealed with an HMAC
//! under the instance key:
//!
//! `f1` + base64url( family | ip | port | inner id | tag16 ),
//! tag = HMAC-SHA256(key, "mcp-fleet/session/v1" | len(category) | category | payload)[..16].
//!
//! Any proxy with the same key and config routes the token without a table, across restarts and
//! instances. Binding the category into the tag means a token minted for one category cannot be
//! replayed against another. Decoding works in a stack buffer: no allocation on the request path.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const PREFIX: &[u8] = b"f1";
const DOMAIN: &[u8] = b"mcp-fleet/session/v1";
const TAG_LEN: usize = 16;
/// Longest server session id carried; the spec's ids are UUIDs or JWT-sized strings.
pub const MAX_INNER: usize = 256;
/// family + IPv6 + port + inner + tag.
const MAX_PAYLOAD: usize = 1 + 16 + 2 + MAX_INNER + TAG_LEN;
/// Longest token accepted before any decoding work.
pub const MAX_TOKEN: usize = PREFIX.len() + MAX_PAYLOAD.div_ceil(3) * 4;
/// Room for what base64 may decode from a token of `MAX_TOKEN` (a whole number of 3-byte groups).
const BUF_LEN: usize = MAX_PAYLOAD.div_ceil(3) * 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("session id is not one this proxy issued")]
    Malformed,
    #[error("session id failed authentication")]
    Forged,
    #[error("server session id is empty, too long or not visible ASCII")]
    BadInner,
}

/// Decoded token: the owning server and its own session id (borrowed from the caller's buffer).
#[derive(Debug, PartialEq, Eq)]
pub struct SessionRoute<'a> {
    pub backend: SocketAddr,
    pub inner: &'a [u8],
}

/// Seals with the current key; opens with the current key, then each previous one (a rotation
/// in progress), so the common case costs one HMAC.
#[derive(Clone)]
pub struct SessionCodec {
    mac: Hmac<Sha256>,
    previous: Vec<Hmac<Sha256>>,
    /// Identifies the key set without holding it twice: a reload that re-reads the same files
    /// changes nothing.
    fingerprint: [u8; 16],
}

/// The codec both engines use, swapped whole when a reload brings other keys.
pub type SharedCodec = std::sync::Arc<arc_swap::ArcSwap<SessionCodec>>;

impl std::fmt::Debug for SessionCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionCodec(..)")
    }
}

/// What a tag covers besides the payload: the category and, for a caller-bound session, the
/// caller's binding (absent for anonymous sessions, whose tags stay as they were before
/// bindings existed).
fn scope(mac: &mut Hmac<Sha256>, category: &str, binding: &[u8]) {
    mac.update(DOMAIN);
    mac.update(&(category.len() as u32).to_be_bytes());
    mac.update(category.as_bytes());
    if !binding.is_empty() {
        mac.update(&[binding.len() as u8]);
        mac.update(binding);
    }
}

/// The spec: a session id holds only visible ASCII (0x21 to 0x7E).
fn valid_inner(inner: &[u8]) -> bool {
    !inner.is_empty() && inner.len() <= MAX_INNER && inner.iter().all(|b| (0x21..=0x7e).contains(b))
}

impl SessionCodec {
    pub fn new(key: &[u8; 32]) -> Self {
        Self::with_previous(key, &[])
    }

    /// Seals with `key`, also opens tokens sealed with any of `previous`.
    pub fn with_previous(key: &[u8; 32], previous: &[[u8; 32]]) -> Self {
        let mac_of = |k: &[u8; 32]| {
            <Hmac<Sha256> as Mac>::new_from_slice(k)
                .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"))
        };
        let mut id = <Hmac<Sha256> as Mac>::new_from_slice(b"mcp-fleet/session/key-set")
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        for k in std::iter::once(key).chain(previous) {
            id.update(k);
        }
        let mut fingerprint = [0u8; 16];
        fingerprint.copy_from_slice(&id.finalize().into_bytes()[..16]);
        Self {
            mac: mac_of(key),
            previous: previous.iter().map(mac_of).collect(),
            fingerprint,
        }
    }

    /// Whether both hold the same keys in the same roles.
    pub fn same_keys(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }

    /// How many keys open tokens (the current one and the previous ones).
    pub fn key_count(&self) -> usize {
        1 + self.previous.len()
    }

    fn tag(&self, category: &str, binding: &[u8], payload: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.mac.clone();
        scope(&mut mac, category, binding);
        mac.update(payload);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    /// The token handed to the client for a session `inner` minted by `backend`.
    pub fn encode(
        &self,
        category: &str,
        backend: SocketAddr,
        inner: &[u8],
    ) -> Result<String, SessionError> {
        self.encode_bound(category, &[], backend, inner)
    }

    /// As [`Self::encode`], for the caller `binding` names (a principal's fingerprint): the
    /// token opens only for the same binding, so a session cannot be taken over by another
    /// caller who learns its id.
    pub fn encode_bound(
        &self,
        category: &str,
        binding: &[u8],
        backend: SocketAddr,
        inner: &[u8],
    ) -> Result<String, SessionError> {
        if !valid_inner(inner) {
            return Err(SessionError::BadInner);
        }
        let mut payload = Vec::with_capacity(MAX_PAYLOAD);
        match backend.ip() {
            IpAddr::V4(ip) => {
                payload.push(4);
                payload.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                payload.push(6);
                payload.extend_from_slice(&ip.octets());
            }
        }
        payload.extend_from_slice(&backend.port().to_be_bytes());
        payload.extend_from_slice(inner);
        let tag = self.tag(category, binding, &payload);
        payload.extend_from_slice(&tag);
        let mut token = String::with_capacity(MAX_TOKEN);
        token.push_str("f1");
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
        Ok(token)
    }

    /// Checks a client's token for `category`; `buf` holds the decoded bytes the result borrows.
    pub fn decode<'a>(
        &self,
        category: &str,
        token: &[u8],
        buf: &'a mut [u8; BUF_LEN],
    ) -> Result<SessionRoute<'a>, SessionError> {
        self.decode_bound(category, &[], token, buf)
    }

    /// As [`Self::decode`], for a token sealed with `encode_bound(.., binding, ..)`.
    pub fn decode_bound<'a>(
        &self,
        category: &str,
        binding: &[u8],
        token: &[u8],
        buf: &'a mut [u8; BUF_LEN],
    ) -> Result<SessionRoute<'a>, SessionError> {
        let body = token
            .strip_prefix(PREFIX)
            .filter(|b| b.len() <= MAX_TOKEN)
            .ok_or(SessionError::Malformed)?;
        let len = URL_SAFE_NO_PAD
            .decode_slice(body, buf)
            .map_err(|_| SessionError::Malformed)?;
        let bytes = &buf[..len];
        let addr_len = match bytes.first() {
            Some(4) => 4,
            Some(6) => 16,
            _ => return Err(SessionError::Malformed),
        };
        let fixed = 1 + addr_len + 2;
        if bytes.len() < fixed + 1 + TAG_LEN {
            return Err(SessionError::Malformed);
        }
        let (payload, tag) = bytes.split_at(bytes.len() - TAG_LEN);
        let verifies = |mac: &Hmac<Sha256>| {
            let mut check = mac.clone();
            scope(&mut check, category, binding);
            check.update(payload);
            // verify_truncated_left compares in constant time.
            check.verify_truncated_left(tag).is_ok()
        };
        if !verifies(&self.mac) && !self.previous.iter().any(verifies) {
            return Err(SessionError::Forged);
        }
        let ip = if addr_len == 4 {
            let mut o = [0u8; 4];
            o.copy_from_slice(&payload[1..5]);
            IpAddr::V4(Ipv4Addr::from(o))
        } else {
            let mut o = [0u8; 16];
            o.copy_from_slice(&payload[1..17]);
            IpAddr::V6(Ipv6Addr::from(o))
        };
        let port = u16::from_be_bytes([payload[1 + addr_len], payload[2 + addr_len]]);
        let inner = &payload[fixed..];
        if !valid_inner(inner) {
            return Err(SessionError::BadInner);
        }
        Ok(SessionRoute {
            backend: SocketAddr::new(ip, port),
            inner,
        })
    }
}

/// A zeroed decode buffer of the right size.
pub fn decode_buffer() -> [u8; BUF_LEN] {
    [0u8; BUF_LEN]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(seed: u8) -> SessionCodec {
        SessionCodec::new(&[seed; 32])
    }

    #[test]
    fn a_rotation_keeps_old_sessions_and_seals_new_ones_with_the_new_key() {
        let old = codec(1);
        let token = old
            .encode("c", "127.0.0.1:9".parse().expect("addr"), b"s-1")
            .expect("seal");
        let rotated = SessionCodec::with_previous(&[2; 32], &[[1; 32]]);
        let mut buf = decode_buffer();
        assert_eq!(
            rotated
                .decode("c", token.as_bytes(), &mut buf)
                .map(|r| r.inner.to_vec()),
            Ok(b"s-1".to_vec()),
            "a session sealed before the rotation still routes"
        );
        let fresh = rotated
            .encode("c", "127.0.0.1:9".parse().expect("addr"), b"s-2")
            .expect("seal");
        assert!(
            codec(2).decode("c", fresh.as_bytes(), &mut buf).is_ok(),
            "sealed with the new key"
        );
        assert_eq!(
            codec(2).decode("c", token.as_bytes(), &mut buf).err(),
            Some(SessionError::Forged),
            "once the old key is dropped its sessions are refused"
        );
        assert!(rotated.same_keys(&SessionCodec::with_previous(&[2; 32], &[[1; 32]])));
        assert!(!rotated.same_keys(&codec(2)));
    }

    #[test]
    fn round_trip_v4_and_v6() {
        let c = codec(1);
        for addr in ["127.0.0.1:50007", "[::1]:8080"] {
            let addr: SocketAddr = addr.parse().expect("addr");
            let token = c
                .encode("database", addr, b"9f1c6a1e-7d4b-4b8e-a3b0-2f6c1d0e5a77")
                .expect("encode");
            assert!(token.bytes().all(|b| (0x21..=0x7e).contains(&b)));
            let mut buf = decode_buffer();
            let route = c
                .decode("database", token.as_bytes(), &mut buf)
                .expect("decode");
            assert_eq!(route.backend, addr);
            assert_eq!(route.inner, b"9f1c6a1e-7d4b-4b8e-a3b0-2f6c1d0e5a77");
        }
    }

    #[test]
    fn tampering_other_keys_and_other_categories_are_refused() {
        let c = codec(1);
        let addr: SocketAddr = "127.0.0.1:50007".parse().expect("addr");
        let token = c.encode("database", addr, b"abc").expect("encode");
        let mut buf = decode_buffer();
        assert_eq!(
            c.decode("api", token.as_bytes(), &mut buf),
            Err(SessionError::Forged)
        );
        assert_eq!(
            codec(2).decode("database", token.as_bytes(), &mut buf),
            Err(SessionError::Forged)
        );
        // A session bound to one caller opens for that caller only.
        let bound = c
            .encode_bound("database", &[7; 16], addr, b"abc")
            .expect("encode");
        assert!(c
            .decode_bound("database", &[7; 16], bound.as_bytes(), &mut buf)
            .is_ok());
        for other in [&[8u8; 16][..], &[]] {
            assert_eq!(
                c.decode_bound("database", other, bound.as_bytes(), &mut buf),
                Err(SessionError::Forged)
            );
        }
        assert_eq!(
            c.decode_bound("database", &[7; 16], token.as_bytes(), &mut buf),
            Err(SessionError::Forged)
        );
        // Flip every character in turn: none may decode to a route.
        let bytes = token.as_bytes();
        for i in 0..bytes.len() {
            let mut t = bytes.to_vec();
            t[i] = if t[i] == b'A' { b'B' } else { b'A' };
            assert!(c.decode("database", &t, &mut buf).is_err(), "flip at {i}");
        }
        for bad in [
            &b""[..],
            b"f1",
            b"xx",
            b"f1!!!!",
            &[0xff; 40][..],
            &[b'f'; 5000][..],
        ] {
            assert!(c.decode("database", bad, &mut buf).is_err());
        }
    }

    #[test]
    fn inner_ids_are_checked() {
        let c = codec(1);
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        assert_eq!(c.encode("a", addr, b""), Err(SessionError::BadInner));
        assert_eq!(
            c.encode("a", addr, b"has space"),
            Err(SessionError::BadInner)
        );
        assert_eq!(
            c.encode("a", addr, &[b'x'; MAX_INNER + 1]),
            Err(SessionError::BadInner)
        );
        let longest = c.encode("a", addr, &[b'x'; MAX_INNER]).expect("max fits");
        assert!(longest.len() <= MAX_TOKEN);
        let mut buf = decode_buffer();
        assert!(c.decode("a", longest.as_bytes(), &mut buf).is_ok());
    }
}
