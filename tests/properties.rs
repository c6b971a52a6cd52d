//! Property tests (proptest) of everything that parses outside input: the config parser and
//! validator, the session-id codec, the route parser and the Origin check. In CI they run the
//! default 256 cases each; `fuzz/run.sh` runs them for many more, bounded in time.

use mcp_fleet::config;
use mcp_fleet::config::AllowedOrigin;
use mcp_fleet::proxy::policy::origin;
use mcp_fleet::proxy::policy::route::{self, Route};
use mcp_fleet::proxy::session::{decode_buffer, SessionCodec};
use proptest::prelude::*;
use std::net::SocketAddr;
use std::path::Path;

/// Fragments a config file is made of, so random files look enough like configs to get past
/// the TOML parser and into the validator.
fn config_text() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("listen"),
        Just("threads"),
        Just("strategy"),
        Just("ports"),
        Just("servers"),
        Just("max_memory_mb"),
        Just("batch_size"),
        Just("command"),
        Just("backends"),
        Just("connect_timeout"),
        Just("weight"),
        Just("hash_header"),
        Just("interval"),
        Just("kind"),
        Just("memory_budget"),
        Just("max_body"),
        Just("allowed_origins"),
        Just("env"),
        Just("bogus"),
    ];
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        "[0-9]{1,6}(ms|s|m|h|MiB|KiB|%)?".prop_map(|s| format!("\"{s}\"")),
        "[0-9]{1,5}-[0-9]{1,5}".prop_map(|s| format!("\"{s}\"")),
        "[a-z:/0-9.\\-\\[\\]*{}]{0,24}".prop_map(|s| format!("\"{s}\"")),
        Just("[\"mcp-fleet\", \"backend\", \"{port}\"]".to_string()),
        Just("[\"127.0.0.1:7000\", \"::1\"]".to_string()),
        Just("{ A = \"{id}\" }".to_string()),
        Just("true".to_string()),
        Just("0.5".to_string()),
    ];
    let section = prop_oneof![
        Just("[proxy]".to_string()),
        Just("[fleet]".to_string()),
        Just("[health]".to_string()),
        Just("[monitor.alerts]".to_string()),
        "[a-z\\-]{1,8}".prop_map(|c| format!("[categories.{c}]")),
    ];
    proptest::collection::vec(
        (section, proptest::collection::vec((key, value), 0..5)),
        0..6,
    )
    .prop_map(|sections| {
        sections
            .into_iter()
            .map(|(s, kvs)| {
                let body: String = kvs
                    .into_iter()
                    .map(|(k, v)| format!("{k} = {v}\n"))
                    .collect();
                format!("{s}\n{body}")
            })
            .collect()
    })
}

proptest! {
    // Failures print their minimal case; nothing is written into the source tree.
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_config_parser_never_panics_on_bytes(text in ".{0,400}") {
        let _ = config::parse(&text, Path::new("f.toml"), Path::new("."));
    }

    #[test]
    fn the_validator_names_a_key_for_every_error(text in config_text()) {
        match config::parse(&text, Path::new("f.toml"), Path::new(".")) {
            Ok(c) => prop_assert!(!c.categories.is_empty()),
            Err(config::LoadError::Invalid { errors, .. }) => {
                prop_assert!(!errors.is_empty());
                for e in errors {
                    prop_assert!(!e.key.is_empty() && !e.reason.is_empty(), "{e}");
                }
            }
            Err(_) => {}
        }
    }

    #[test]
    fn session_ids_round_trip(
        ip in any::<[u8; 4]>(), port in 1u16.., inner in "[!-~]{1,256}", cat in "[a-z]{1,12}"
    ) {
        let codec = SessionCodec::new(&[9; 32]);
        let addr = SocketAddr::from((ip, port));
        let token = codec.encode(&cat, addr, inner.as_bytes()).expect("encodable");
        let mut buf = decode_buffer();
        let route = codec.decode(&cat, token.as_bytes(), &mut buf).expect("decodes");
        prop_assert_eq!(route.backend, addr);
        prop_assert_eq!(route.inner, inner.as_bytes());
    }

    #[test]
    fn random_session_ids_never_route(token in proptest::collection::vec(any::<u8>(), 0..600)) {
        let codec = SessionCodec::new(&[9; 32]);
        let mut buf = decode_buffer();
        // A forgery would need the key; random bytes (even with the right prefix) never pass.
        let mut t = b"f1".to_vec();
        t.extend_from_slice(&token);
        prop_assert!(codec.decode("c", &token, &mut buf).is_err());
        prop_assert!(codec.decode("c", &t, &mut buf).is_err());
    }

    #[test]
    fn edited_session_ids_never_route(pos in any::<usize>(), byte in any::<u8>()) {
        let codec = SessionCodec::new(&[9; 32]);
        let addr: SocketAddr = "127.0.0.1:50007".parse().expect("addr");
        let token = codec.encode("c", addr, b"abc-123").expect("encode").into_bytes();
        let mut edited = token.clone();
        let i = pos % edited.len();
        edited[i] = if edited[i] == byte { byte.wrapping_add(1) } else { byte };
        let mut buf = decode_buffer();
        if let Ok(r) = codec.decode("c", &edited, &mut buf) {
            // base64 has two spellings of the last partial byte; anything else must fail.
            prop_assert_eq!(r.backend, addr);
            prop_assert_eq!(r.inner, b"abc-123");
        }
    }

    #[test]
    fn routes_never_escape_the_mcp_path(path in "/[ -~]{0,80}", query in proptest::option::of("[ -~]{0,20}")) {
        match route::parse(&path, query.as_deref()) {
            Route::Mcp { category, .. } => {
                prop_assert!(!category.is_empty() && !category.contains('/'));
                prop_assert_eq!(format!("/mcp/{category}"), path);
            }
            Route::Health => prop_assert_eq!(path, "/health"),
            Route::Stats => prop_assert_eq!(path, "/stats"),
            Route::ResourceMetadata(None) => {
                prop_assert_eq!(path, "/.well-known/oauth-protected-resource")
            }
            Route::ResourceMetadata(Some(category)) => {
                prop_assert!(!category.is_empty() && !category.contains('/'));
                prop_assert_eq!(format!("/.well-known/oauth-protected-resource/mcp/{category}"), path);
            }
            Route::NotFound => {}
        }
    }

    #[test]
    fn the_origin_check_never_panics_and_only_admits_loopback(origin in proptest::collection::vec(any::<u8>(), 0..80)) {
        let list: Vec<AllowedOrigin> = mcp_fleet::config::defaults::ALLOWED_ORIGINS
            .iter()
            .map(|e| AllowedOrigin::parse(e, true).expect("default entries parse"))
            .collect();
        if origin::allowed(&origin, &list) {
            let text = String::from_utf8_lossy(&origin).to_ascii_lowercase();
            let text = text.trim();
            prop_assert!(
                text.starts_with("http://localhost") || text.starts_with("http://127.0.0.1") || text.starts_with("http://[::1]"),
                "{}", text
            );
        }
    }

    /// One parser for entries and requests: an entry that passes validation is printed back as
    /// an origin that it admits (the old check let "http://h:abc" pass, then never matched).
    #[test]
    fn a_valid_entry_admits_its_own_spelling(entry in "[a-z]{1,5}://[a-z0-9.-]{1,12}(:[0-9]{1,5})?") {
        if let Ok(parsed) = AllowedOrigin::parse(&entry, true) {
            let again = AllowedOrigin::parse(&parsed.to_string(), false).expect("printed form parses");
            prop_assert!(parsed.admits(&again), "{} vs {}", parsed, again);
            prop_assert!(origin::allowed(entry.as_bytes(), &[parsed]));
        }
    }
}
