//! What a credential costs per request: an API key (SHA-256 and a map lookup), a JWT from the
//! token cache (a warm request), and a JWT verified from scratch (a new token: header, key
//! lookup, signature, claims), ES256 and EdDSA. Reported, not asserted:
//! `cargo bench --bench auth`. Keys are made for the run (ring), never stored.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use mcp_fleet::auth::{Authenticator, KeySet};
use ring::rand::SystemRandom;
use ring::signature::{self, KeyPair};
use std::path::Path;

fn authenticator(token_cache: usize, keys_file: &Path) -> Authenticator {
    let text = format!(
        "[auth]\nmode = \"oauth\"\nissuer = \"http://127.0.0.1:1\"\naudience = \"http://127.0.0.1:2\"\n\
         token_cache = {token_cache}\napi_keys_file = \"{}\"\n[categories.c]\nports = \"41000-41001\"\n",
        keys_file.display()
    );
    let config = mcp_fleet::config::parse(&text, Path::new("bench.toml"), Path::new("/"))
        .expect("a valid config");
    Authenticator::new(&config.auth)
}

fn claims() -> serde_json::Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    serde_json::json!({"iss": "http://127.0.0.1:1", "sub": "bench", "aud": "http://127.0.0.1:2",
                       "scope": "mcp:api", "exp": now + 3600, "iat": now})
}

/// (token, JWK of its public key) for ES256 and EdDSA keys made now.
fn tokens() -> Vec<(&'static str, String, serde_json::Value)> {
    let rng = SystemRandom::new();
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    let es =
        signature::EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("P-256 key");
    let es_pair = signature::EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        es.as_ref(),
        &rng,
    )
    .expect("P-256 key");
    let point = es_pair.public_key().as_ref();
    let es_jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "es", "alg": "ES256", "use": "sig",
                                    "x": b64(&point[1..33]), "y": b64(&point[33..65])});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("es".into());
    let es_token = jsonwebtoken::encode(
        &header,
        &claims(),
        &jsonwebtoken::EncodingKey::from_ec_der(es.as_ref()),
    )
    .expect("sign");

    let ed = signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("Ed25519 key");
    let ed_pair = signature::Ed25519KeyPair::from_pkcs8(ed.as_ref()).expect("Ed25519 key");
    let ed_jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": "ed", "alg": "EdDSA", "use": "sig",
                                    "x": b64(ed_pair.public_key().as_ref())});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some("ed".into());
    let ed_token = jsonwebtoken::encode(
        &header,
        &claims(),
        &jsonwebtoken::EncodingKey::from_ed_der(ed.as_ref()),
    )
    .expect("sign");
    vec![("ES256", es_token, es_jwk), ("EdDSA", ed_token, ed_jwk)]
}

fn credentials(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("mcp-fleet-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let key = "bench-api-key-0123456789abcdef";
    let digest: String = {
        use sha2::Digest;
        sha2::Sha256::digest(key.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let keys_file = dir.join("keys.toml");
    std::fs::write(
        &keys_file,
        format!("[[key]]\nname = \"b\"\nsha256 = \"{digest}\"\n"),
    )
    .expect("keys");
    let tokens = tokens();
    let jwks =
        serde_json::json!({ "keys": tokens.iter().map(|t| t.2.clone()).collect::<Vec<_>>() });
    let with_keys = |cache: usize| {
        let a = authenticator(cache, &keys_file);
        let (set, _) = KeySet::from_document(&jwks).expect("key set");
        a.install(set);
        a
    };
    let warm = with_keys(1000);
    let cold = with_keys(0);
    c.bench_function("auth/api-key", |b| {
        b.iter(|| {
            warm.authenticate(black_box(key.as_bytes()))
                .expect("known key")
        })
    });
    for (alg, token, _) in &tokens {
        warm.authenticate(token.as_bytes()).expect("a valid token");
        c.bench_function(&format!("auth/jwt {alg} warm (token cache)"), |b| {
            b.iter(|| {
                warm.authenticate(black_box(token.as_bytes()))
                    .expect("valid")
            })
        });
        c.bench_function(&format!("auth/jwt {alg} new token (verified)"), |b| {
            b.iter(|| {
                cold.authenticate(black_box(token.as_bytes()))
                    .expect("valid")
            })
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, credentials);
criterion_main!(benches);
