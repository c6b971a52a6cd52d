//! The edge's authentication and policy against a real authorization server (`oidc-provider`)
//! and real clients: tokens it issues (RS256, ES256, EdDSA), tokens no honest server issues
//! (expired, not yet valid, other issuer, tampered, `alg: none`, HS256 keyed with the public
//! key), audiences (RFC 8707), scopes, allow-lists and list filtering, routing fields, session
//! binding, no token passthrough, key rotation; API keys and rate limits. `.ci/run` runs this
//! suite on both engines.

mod common;

use common::auth::{jwt_tool, key_set, merged, AuthServer};
use common::http::{self, ACCEPT};
use common::{fake, FleetDir, Sections};
use serde_json::{json, Value};
use std::time::Duration;

fn call_body(tool: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 41, "method": "tools/call",
           "params": {"name": tool, "arguments": {"text": "hi", "key": "k", "value": "v"},
               "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                         "io.modelcontextprotocol/clientInfo": {"name": "auth-test", "version": "1"},
                         "io.modelcontextprotocol/clientCapabilities": {}}}})
}

fn list_body() -> Value {
    json!({"jsonrpc": "2.0", "id": 42, "method": "tools/list",
           "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                         "io.modelcontextprotocol/clientInfo": {"name": "auth-test", "version": "1"},
                         "io.modelcontextprotocol/clientCapabilities": {}}}})
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        // A JSON answer, or the last `data:` of an event stream.
        serde_json::from_str(&self.body).unwrap_or_else(|_| {
            self.body
                .lines()
                .rev()
                .filter_map(|l| l.strip_prefix("data:"))
                .find_map(|d| serde_json::from_str(d.trim()).ok())
                .unwrap_or(Value::Null)
        })
    }
    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }
}

async fn post(url: &str, token: Option<&str>, body: &Value, fields: &[(&str, &str)]) -> Answer {
    let mut req = http::client()
        .post(url)
        .header("accept", ACCEPT)
        .header("mcp-protocol-version", "2026-07-28");
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    // The routing fields 2026-07-28 requests carry, from the body, unless the test sets them.
    let method = body["method"].as_str().unwrap_or_default();
    if !fields.iter().any(|(k, _)| *k == "mcp-method") {
        req = req.header("mcp-method", method);
    }
    if let (false, Some(name)) = (
        fields.iter().any(|(k, _)| *k == "mcp-name"),
        body["params"]["name"].as_str(),
    ) {
        req = req.header("mcp-name", name);
    }
    for (k, v) in fields {
        req = req.header(*k, *v);
    }
    let resp = req.json(body).send().await.expect("send");
    Answer {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.text().await.unwrap_or_default(),
    }
}

fn tool_names(v: &Value) -> Vec<String> {
    v["result"]["tools"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|t| t["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_tokens_scopes_allow_lists_and_sessions() {
    let keys_dir = tempfile::tempdir().expect("tempdir");
    let first = key_set(keys_dir.path(), "1");
    let mut idp = AuthServer::start(&first, "http://127.0.0.1:1");
    let (echo_port, _counts) = fake::spawn(fake::Behaviour::Echo).await;
    std::env::set_var("AUTH_TEST_UPSTREAM_KEY", "upstream-secret-1");
    let auth = format!(
        "mode = \"oauth\"\nissuer = \"{}\"\naudience = \"AUDIENCE\"\njwks_refresh = \"1s\"\njwks_cooldown = \"1s\"",
        idp.issuer()
    );
    let fleet = FleetDir::with_sections(
        &[("database", 1)],
        &[("echo", vec![format!("127.0.0.1:{echo_port}").parse().expect("addr")])],
        &Sections {
            auth: &auth,
            categories: vec![
                (
                    "database",
                    "[categories.database.auth]\nscopes = [\"mcp:database\"]\ntools = [\"echo\", \"recall\"]"
                        .into(),
                ),
                (
                    "echo",
                    "upstream_headers = { \"X-Upstream-Key\" = \"env:AUTH_TEST_UPSTREAM_KEY\" }"
                        .into(),
                ),
            ],
            ..Sections::default()
        },
    );
    // The audience is the proxy's own URL, known once the harness has picked its port.
    let audience = fleet.base();
    let config = std::fs::read_to_string(fleet.config()).expect("config");
    std::fs::write(fleet.config(), config.replace("AUDIENCE", &audience)).expect("config");
    let _serve = fleet.serve();
    let db = format!("{}/mcp/database", fleet.base());
    let db_resource = format!("{audience}/mcp/database");

    // No credentials: 401, a challenge naming the metadata and the scope, a JSON-RPC body.
    let a = post(&db, None, &call_body("echo"), &[]).await;
    assert_eq!(a.status, 401, "{}", a.body);
    let challenge = a.header("www-authenticate");
    assert!(
        challenge.starts_with("Bearer ")
            && challenge.contains(&format!(
                "resource_metadata=\"{audience}/.well-known/oauth-protected-resource/mcp/database\""
            ))
            && challenge.contains("scope=\"mcp:database\""),
        "{challenge}"
    );
    assert_eq!(a.json()["error"]["code"], -32010);

    // RFC 9728 metadata, for the category and for the proxy.
    let (status, doc) = common::plain::blocking_get(&format!(
        "{}/.well-known/oauth-protected-resource/mcp/database",
        fleet.base()
    ))
    .expect("metadata");
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&doc).expect("json");
    assert_eq!(doc["resource"], db_resource.as_str());
    assert_eq!(doc["authorization_servers"][0], idp.issuer().as_str());
    assert_eq!(doc["scopes_supported"], json!(["mcp:database"]));

    // Tokens from the server, each algorithm; the first request of a token verifies it.
    for client in ["rs-client", "es-client", "ed-client"] {
        let token = idp.token(client, "mcp:database", &db_resource).await;
        let a = post(&db, Some(&token), &call_body("echo"), &[]).await;
        assert_eq!(a.status, 200, "{client}: {}", a.body);
        assert!(a.body.contains("hi"), "{client}: {}", a.body);
    }
    // A token for the proxy as a whole is accepted too; one for another resource is not.
    let whole = idp.token("rs-client", "mcp:database", &audience).await;
    assert_eq!(
        post(&db, Some(&whole), &call_body("echo"), &[])
            .await
            .status,
        200
    );
    let elsewhere = idp
        .token(
            "rs-client",
            "mcp:database",
            "http://127.0.0.9:1/mcp/database",
        )
        .await;
    let a = post(&db, Some(&elsewhere), &call_body("echo"), &[]).await;
    assert_eq!(a.status, 401);
    assert!(a
        .header("www-authenticate")
        .contains("error=\"invalid_token\""));

    // The scope the category needs is missing: 403 insufficient_scope, naming it.
    let time_only = idp.token("rs-client", "mcp:time", &db_resource).await;
    let a = post(&db, Some(&time_only), &call_body("echo"), &[]).await;
    assert_eq!(a.status, 403, "{}", a.body);
    let challenge = a.header("www-authenticate");
    assert!(
        challenge.contains("error=\"insufficient_scope\"")
            && challenge.contains("scope=\"mcp:database\""),
        "{challenge}"
    );

    // Tokens no honest server issues, signed with the server's own keys where a key is needed.
    let keys = first.to_string_lossy().to_string();
    let iss = idp.issuer();
    let claims = |extra: Value| {
        let mut c = json!({"iss": iss, "sub": "forger", "aud": db_resource, "scope": "mcp:database",
                           "exp": "now+300", "iat": "now-1"});
        for (k, v) in extra.as_object().expect("object") {
            c[k] = v.clone();
        }
        c.to_string()
    };
    let good = jwt_tool(&["sign", &keys, "rs-1", &claims(json!({}))]);
    assert_eq!(
        post(&db, Some(&good), &call_body("echo"), &[]).await.status,
        200
    );
    let mut tampered = good.clone().into_bytes();
    let at = tampered.len() - 10;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    let forged = [
        (
            "expired",
            jwt_tool(&["sign", &keys, "es-1", &claims(json!({"exp": "now-120"}))]),
        ),
        (
            "not yet valid",
            jwt_tool(&["sign", &keys, "ed-1", &claims(json!({"nbf": "now+120"}))]),
        ),
        (
            "other issuer",
            jwt_tool(&[
                "sign",
                &keys,
                "rs-1",
                &claims(json!({"iss": "http://127.0.0.1:9/"})),
            ]),
        ),
        ("tampered", tampered),
        ("alg none", jwt_tool(&["none", &claims(json!({}))])),
        (
            "HS256 with the public key",
            jwt_tool(&["hs256-public", &keys, "rs-1", &claims(json!({}))]),
        ),
        (
            "no audience",
            jwt_tool(&["sign", &keys, "rs-1", &claims(json!({"aud": null}))]),
        ),
        ("garbage", "not-a-token".to_string()),
    ];
    for (case, token) in &forged {
        let a = post(&db, Some(token), &call_body("echo"), &[]).await;
        assert_eq!(a.status, 401, "{case}: {}", a.body);
        assert!(
            a.header("www-authenticate").starts_with("Bearer "),
            "{case}"
        );
        assert_eq!(a.json()["error"]["code"], -32010, "{case}");
    }
    for reason in [
        "expired",
        "not_yet_valid",
        "issuer",
        "signature",
        "algorithm",
        "audience",
    ] {
        let n = fleet.metric(&format!(
            "mcp_fleet_auth_refused_total{{reason=\"{reason}\"}}"
        ));
        assert!(n >= 1.0, "{reason}: {n}");
    }

    // Allow-lists: a tool outside it is refused with the request's id, and not listed.
    let token = idp.token("rs-client", "mcp:database", &db_resource).await;
    let a = post(&db, Some(&token), &call_body("remember"), &[]).await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert_eq!(a.json()["id"], 41);
    assert!(a.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("remember"));
    let a = post(&db, Some(&token), &list_body(), &[]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let mut names = tool_names(&a.json());
    names.sort();
    assert_eq!(names, ["echo", "recall"], "{}", a.body);
    // The same list in a session, whose answers are event streams.
    let c = http::client();
    let resp = c
        .post(&db)
        .bearer_auth(&token)
        .header("accept", ACCEPT)
        .json(&http::initialize_body())
        .send()
        .await
        .expect("initialize");
    assert_eq!(resp.status(), 200);
    let sid = resp.headers()["mcp-session-id"]
        .to_str()
        .expect("sid")
        .to_string();
    let _ = resp.text().await;
    let resp = c
        .post(&db)
        .bearer_auth(&token)
        .header("accept", ACCEPT)
        .header("mcp-session-id", &sid)
        .json(&json!({"jsonrpc": "2.0", "id": 5, "method": "tools/list", "params": {}}))
        .send()
        .await
        .expect("list");
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap_or_default();
    let listed = Answer {
        status: 200,
        headers: Default::default(),
        body,
    };
    let mut names = tool_names(&listed.json());
    names.sort();
    assert_eq!(names, ["echo", "recall"], "{}", listed.body);
    assert!(fleet.metric("mcp_fleet_list_items_hidden_total{category=\"database\"}") >= 2.0);

    // The session is bound to its caller: another subject presenting it gets 404.
    let other = idp
        .token("other-client", "mcp:database", &db_resource)
        .await;
    for (who, t, want) in [("owner", &token, 200), ("another subject", &other, 404)] {
        let resp = c
            .post(&db)
            .bearer_auth(t)
            .header("accept", ACCEPT)
            .header("mcp-session-id", &sid)
            .json(&json!({"jsonrpc": "2.0", "id": 6, "method": "tools/call",
                          "params": {"name": "echo", "arguments": {"text": "again"}}}))
            .send()
            .await
            .expect("call");
        assert_eq!(resp.status().as_u16(), want, "{who}");
    }

    // Routing fields must agree with the body.
    let a = post(
        &db,
        Some(&token),
        &call_body("remember"),
        &[("mcp-method", "tools/call"), ("mcp-name", "echo")],
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body.contains("Mcp-Name"), "{}", a.body);

    // No token passthrough: the server sees the category's own credential, not the client's.
    let echo_resource = format!("{audience}/mcp/echo");
    let echo_token = idp.token("rs-client", "mcp:api", &echo_resource).await;
    let a = post(
        &format!("{}/mcp/echo", fleet.base()),
        Some(&echo_token),
        &call_body("x"),
        &[],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let head = a.json()["result"]["head"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(!head.contains("authorization"), "{head}");
    assert!(!head.contains(&echo_token.to_ascii_lowercase()), "{head}");
    assert!(head.contains("x-upstream-key: upstream-secret-1"), "{head}");
    assert!(
        !fleet.log().contains("upstream-secret-1"),
        "the upstream credential is never logged"
    );

    // Key rotation: the server signs with a new key beside the old; a token with the new kid
    // is verified after one fetch, the old token still is.
    let second = key_set(keys_dir.path(), "2");
    let both = merged(keys_dir.path(), &second, &first);
    let second_keys = second.to_string_lossy().to_string();
    idp.restart(&both);
    let new = jwt_tool(&[
        "sign",
        &second_keys,
        "rs-2",
        &claims(json!({"sub": "rotated"})),
    ]);
    assert_eq!(
        post(&db, Some(&new), &call_body("echo"), &[]).await.status,
        200
    );
    assert_eq!(
        post(&db, Some(&good), &call_body("echo"), &[]).await.status,
        200
    );
    // The old key leaves the set: its tokens stop working at the next refresh (1 s here).
    idp.restart(&second);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while post(&db, Some(&good), &call_body("echo"), &[]).await.status != 401 {
        assert!(
            std::time::Instant::now() < deadline,
            "the old key was never dropped"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        post(&db, Some(&new), &call_body("echo"), &[]).await.status,
        200
    );
    // The official Python SDK with a bearer token: its session life works, it is shown only the
    // allowed tools, and a refused tool is an error to it.
    let fresh = idp.token("rs-client", "mcp:database", &db_resource).await;
    let sdk = |scenario: &str, arg: Option<&str>| {
        let py =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/stdio-servers/py");
        let out = std::process::Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/sdk_client.py"
            ))
            .arg(&db)
            .arg(scenario)
            .args(arg)
            .env("PYTHONPATH", &py)
            .env("MCP_BEARER_TOKEN", &fresh)
            .output()
            .expect("run python3");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, stdout, stderr) = sdk("list", None);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(r#""tools": ["echo", "recall"]"#),
        "{stdout}"
    );
    let (ok, stdout, stderr) = sdk("session", Some(r#"echo={"text": "hi"}"#));
    assert!(ok && stdout.contains("\"calls\": 20"), "{stdout}{stderr}");
    let (ok, _, _) = sdk("call", Some(r#"remember={"key": "k", "value": "v"}"#));
    assert!(!ok, "a refused tool fails the SDK's call");
    fleet.assert_engine();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_reach_their_categories_within_their_rate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sha = common::auth::sha256_hex;
    let keys = dir.path().join("api-keys.toml");
    std::fs::write(
        &keys,
        format!(
            "[[key]]\nname = \"ci\"\nsha256 = \"{}\"\nscopes = [\"mcp:api\"]\n\n\
             [[key]]\nname = \"time-only\"\nsha256 = \"{}\"\ncategories = [\"time\"]\nscopes = [\"mcp:api\"]\n",
            sha("key-ci-0123456789"),
            sha("key-time-0123456789")
        ),
    )
    .expect("keys");
    let auth = format!(
        "mode = \"api-key\"\napi_keys_file = \"{}\"\naudit = \"all\"",
        keys.display()
    );
    let fleet = FleetDir::with_sections(
        &[("api", 1), ("time", 1)],
        &[],
        &Sections {
            proxy: "[proxy.rate_limit]\nper_principal = \"3/s\"",
            auth: &auth,
            categories: vec![(
                "api",
                "[categories.api.auth]\nscopes = [\"mcp:api\"]".into(),
            )],
            ..Sections::default()
        },
    );
    let _serve = fleet.serve();
    let api = format!("{}/mcp/api", fleet.base());
    let time = format!("{}/mcp/time", fleet.base());

    let a = post(&api, Some("key-unknown"), &call_body("echo"), &[]).await;
    assert_eq!(a.status, 401);
    assert!(a.header("www-authenticate").contains("realm=\"mcp-fleet\""));
    let a = post(&api, Some("key-time-0123456789"), &call_body("echo"), &[]).await;
    assert_eq!(
        a.status, 403,
        "a key limited to other categories: {}",
        a.body
    );
    assert_eq!(
        post(&time, Some("key-time-0123456789"), &call_body("echo"), &[])
            .await
            .status,
        200
    );

    // 3/s with a one-second bucket: three pass, the fourth is 429 with Retry-After.
    let mut statuses = Vec::new();
    let mut refused = None;
    for _ in 0..6 {
        let a = post(&api, Some("key-ci-0123456789"), &call_body("echo"), &[]).await;
        statuses.push(a.status);
        if a.status == 429 && refused.is_none() {
            refused = Some(a);
        }
    }
    assert!(statuses.starts_with(&[200, 200, 200]), "{statuses:?}");
    let refused = refused.expect("a 429 within six requests");
    assert_eq!(refused.header("retry-after"), "1");
    assert_eq!(refused.json()["error"]["code"], -32012);
    // The other caller has its own bucket; and the first one recovers.
    assert_eq!(
        post(&time, Some("key-time-0123456789"), &call_body("echo"), &[])
            .await
            .status,
        200
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        post(&api, Some("key-ci-0123456789"), &call_body("echo"), &[])
            .await
            .status,
        200
    );
    assert!(fleet.metric("mcp_fleet_rate_limited_total{kind=\"principal\"}") >= 1.0);
    let log = fleet.log();
    assert!(
        log.contains("request refused") && log.contains("key:ci") && log.contains("rate limit"),
        "an audit line per refusal"
    );
    assert!(!log.contains("key-ci-0123456789"), "keys are never logged");
    assert!(
        log.contains("request allowed"),
        "auth.audit = \"all\" logs allowed requests too"
    );
    fleet.assert_engine();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_callers_are_limited_per_address() {
    let fleet = FleetDir::with_sections(
        &[("api", 1)],
        &[],
        &Sections {
            proxy: "[proxy.rate_limit]\nper_ip_anonymous = \"2/s\"",
            ..Sections::default()
        },
    );
    let _serve = fleet.serve();
    let api = format!("{}/mcp/api", fleet.base());
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(post(&api, None, &call_body("echo"), &[]).await.status);
    }
    assert!(
        statuses.starts_with(&[200, 200]) && statuses.contains(&429),
        "{statuses:?}"
    );
    fleet.assert_engine();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_issuer_is_trusted_through_its_ca_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    common::tls::make_ca(d);
    common::tls::make_cert(d, "idp", "2");
    let keys = key_set(d, "t");
    let idp = AuthServer::start_tls(
        &keys,
        "http://127.0.0.1:1",
        &d.join("idp.pem"),
        &d.join("idp.key"),
        &d.join("ca.pem"),
    );
    // First without auth.ca_file: the system's roots do not know the test CA, so the keys
    // cannot be fetched and requests get 503 (not 401: the token may well be good).
    let auth = format!(
        "mode = \"oauth\"\nissuer = \"{}\"\naudience = \"AUDIENCE\"",
        idp.issuer()
    );
    let fleet = FleetDir::with_sections(
        &[("api", 1)],
        &[],
        &Sections {
            auth: &auth,
            ..Sections::default()
        },
    );
    let audience = fleet.base();
    let config = std::fs::read_to_string(fleet.config()).expect("config");
    let config = config.replace("AUDIENCE", &audience);
    std::fs::write(fleet.config(), &config).expect("config");
    let _serve = fleet.serve();
    let api = format!("{}/mcp/api", fleet.base());
    let token = idp
        .token("es-client", "mcp:api", &format!("{audience}/mcp/api"))
        .await;
    let a = post(&api, Some(&token), &call_body("echo"), &[]).await;
    assert_eq!(a.status, 503, "{}", a.body);
    assert!(a.body.contains("signing keys"), "{}", a.body);

    // auth.ca_file, applied by a reload: the keys are fetched over verified TLS.
    let with_ca = config.replace(
        "mode = \"oauth\"",
        &format!(
            "mode = \"oauth\"\nca_file = \"{}\"",
            d.join("ca.pem").display()
        ),
    );
    std::fs::write(fleet.config(), with_ca).expect("config");
    let (code, out) = fleet.cli(&["reload"]);
    assert_eq!(code, 0, "{out}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let a = post(&api, Some(&token), &call_body("echo"), &[]).await;
        if a.status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never accepted: {} {}",
            a.status,
            a.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(fleet.metric("mcp_fleet_auth_signing_keys{state=\"loaded\"}") >= 3.0);
}
