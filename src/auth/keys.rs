//! The issuer's signing keys (a JWK set), as verification keys with the algorithms each may
//! verify. Symmetric (`oct`) keys and encryption keys are left out: a public key set holding an
//! HMAC secret would let anyone who read it sign tokens, and a public key must never be taken as
//! an HMAC secret (the "HS256 signed with the public key" attack).

use super::AuthError;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// One verification key.
pub struct Key {
    pub kid: Option<String>,
    pub algorithms: Vec<Algorithm>,
    pub key: DecodingKey,
}

/// The keys in force; empty until the first fetch succeeds.
#[derive(Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

const RSA: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

fn algorithm_of(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

impl KeySet {
    /// The usable keys of a JWK set document; keys this proxy cannot use are skipped (and
    /// counted in the second value), not fatal: a set may hold encryption keys or future kinds.
    pub fn from_document(doc: &serde_json::Value) -> Result<(Self, usize), &'static str> {
        let list = doc
            .get("keys")
            .and_then(|k| k.as_array())
            .ok_or("not a JWK set (no \"keys\" array)")?;
        let mut keys = Vec::new();
        let mut skipped = 0;
        for value in list {
            match Self::key(value) {
                Some(k) => keys.push(k),
                None => skipped += 1,
            }
        }
        Ok((Self { keys }, skipped))
    }

    fn key(value: &serde_json::Value) -> Option<Key> {
        let jwk: Jwk = serde_json::from_value(value.clone()).ok()?;
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            return None;
        }
        let by_type: Vec<Algorithm> = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => RSA.to_vec(),
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => vec![Algorithm::ES256],
                EllipticCurve::P384 => vec![Algorithm::ES384],
                _ => return None,
            },
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                vec![Algorithm::EdDSA]
            }
            _ => return None,
        };
        let algorithms = match jwk.common.key_algorithm {
            None => by_type,
            Some(alg) => {
                let alg = algorithm_of(alg)?;
                if !by_type.contains(&alg) {
                    return None;
                }
                vec![alg]
            }
        };
        let key = DecodingKey::from_jwk(&jwk).ok()?;
        Some(Key {
            kid: jwk.common.key_id,
            algorithms,
            key,
        })
    }

    /// The key a token's header names: by `kid`, or the only key for the algorithm when the
    /// token names none.
    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Result<&Key, AuthError> {
        let mut candidates = self
            .keys
            .iter()
            .filter(|k| kid.is_none() || k.kid.as_deref() == kid);
        let first = candidates.next().ok_or(AuthError::UnknownSigningKey)?;
        let key = std::iter::once(first)
            .chain(candidates)
            .find(|k| k.algorithms.contains(&alg))
            .ok_or(AuthError::Algorithm)?;
        Ok(key)
    }

    pub fn holds(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().filter_map(|k| k.kid.as_deref())
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn symmetric_and_encryption_keys_are_never_used() {
        let doc = json!({ "keys": [
            { "kty": "oct", "kid": "h", "k": "c2VjcmV0" },
            { "kty": "EC", "crv": "P-256", "kid": "e", "use": "enc",
              "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
              "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0" },
            { "kty": "EC", "crv": "P-256", "kid": "s",
              "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
              "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0" },
        ]});
        let (set, skipped) = KeySet::from_document(&doc).expect("a key set");
        assert_eq!((set.len(), skipped), (1, 2));
        assert!(set.find(Some("s"), Algorithm::ES256).is_ok());
        assert_eq!(
            set.find(Some("s"), Algorithm::HS256).err(),
            Some(AuthError::Algorithm)
        );
        assert_eq!(
            set.find(Some("h"), Algorithm::HS256).err(),
            Some(AuthError::UnknownSigningKey)
        );
    }
}
