//! The edge's rules on both engines (`common::engines`): credentials, scopes, allow-lists,
//! routing fields, no token passthrough, the proxy's own upstream field and rate limits give the
//! same answers whether a request takes the fast path or Pingora's.

mod common;

use common::engines::{call_body, post, run, Case, Instance};
use common::fake::{self, Behaviour};

/// The edge's rules (credentials, scopes, allow-lists, routing fields, no passthrough, the
/// proxy's own upstream field, rate limits) on both engines: API keys, so no authorization
/// server is needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_engines_apply_the_edge_alike() {
    let (echo, echo_counts) = fake::spawn(Behaviour::Echo).await;
    let statics = vec![("echo", vec![([127, 0, 0, 1], echo).into()])];
    let keys_dir = tempfile::tempdir().expect("tempdir");
    let sha = common::auth::sha256_hex;
    let keys = keys_dir.path().join("keys.toml");
    std::fs::write(
        &keys,
        format!(
            "[[key]]\nname = \"full\"\nsha256 = \"{}\"\nscopes = [\"mcp:echo\"]\n\
             [[key]]\nname = \"bare\"\nsha256 = \"{}\"\n\
             [[key]]\nname = \"limited\"\nsha256 = \"{}\"\nscopes = [\"mcp:echo\"]\n",
            sha("key-full"),
            sha("key-bare"),
            sha("key-limited")
        ),
    )
    .expect("keys");
    std::env::set_var("DIFFERENTIAL_UPSTREAM_KEY", "proxy-own-credential");
    let auth = format!("mode = \"api-key\"\napi_keys_file = \"{}\"", keys.display());
    let categories = || {
        vec![(
            "echo",
            "upstream_headers = { \"X-Service-Key\" = \"env:DIFFERENTIAL_UPSTREAM_KEY\" }\n\
             [categories.echo.auth]\nscopes = [\"mcp:echo\"]\ntools = [\"echo\", \"read_*\"]\n\
             prompts = [\"greet\"]\nresources = [\"file:///docs/*\"]"
                .to_string(),
        )]
    };
    // A burst of 5 per principal (`full` uses all five of its own; refusals before the rate
    // limit are not charged): the `limited` key's sixth request in a row is refused.
    let limits = "[proxy.rate_limit]\nper_principal = \"1/m\"\nburst = \"300s\"";
    let fast = Instance::start_with(&statics, true, limits, &auth, categories());
    let pingora = Instance::start_with(&statics, false, limits, &auth, categories());

    let body = call_body();
    let named = |tool: &str| body.replace("\"echo\"", &format!("\"{tool}\""));
    let bearer = |k: &str| format!("authorization: Bearer {k}\r\nmcp-name: echo\r\n");
    let case = |name, request: String| Case::to(name, request, &echo_counts);
    let list = r#"{"jsonrpc":"2.0","id":8,"method":"tools/list","params":{}}"#;
    let rpc = |method: &str, params: &str| {
        let body = format!(r#"{{"jsonrpc":"2.0","id":9,"method":"{method}","params":{params}}}"#);
        format!(
            "POST /mcp/echo HTTP/1.1\r\nhost: {{host}}\r\ncontent-type: application/json\r\n\
             accept: application/json, text/event-stream\r\nauthorization: Bearer key-full\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let cases = vec![
        case("no credential", post("/mcp/echo", "", &body)),
        case(
            "not a bearer credential",
            post("/mcp/echo", "authorization: Basic a2V5\r\n", &body),
        ),
        case("unknown key", post("/mcp/echo", &bearer("key-nope"), &body)),
        case(
            "a key without the scope",
            post("/mcp/echo", &bearer("key-bare"), &body),
        ),
        case(
            "allowed tool: no passthrough, the proxy's own field",
            post("/mcp/echo", &bearer("key-full"), &body),
        ),
        case(
            "tool by prefix",
            post(
                "/mcp/echo",
                "authorization: Bearer key-full\r\nmcp-name: read_file\r\n",
                &named("read_file"),
            ),
        ),
        case(
            "tool outside the allow-list",
            post(
                "/mcp/echo",
                "authorization: Bearer key-full\r\nmcp-name: drop\r\n",
                &named("drop"),
            ),
        ),
        case(
            "Mcp-Name disagrees with the body",
            post(
                "/mcp/echo",
                "authorization: Bearer key-full\r\nmcp-name: echo\r\n",
                &named("drop"),
            ),
        ),
        case(
            "a body that is not JSON-RPC",
            post("/mcp/echo", "authorization: Bearer key-full\r\n", "[1,2]"),
        ),
        case(
            "a list answer (filtered)",
            format!(
                "POST /mcp/echo HTTP/1.1\r\nhost: {{host}}\r\ncontent-type: application/json\r\n\
                 accept: application/json, text/event-stream\r\nauthorization: Bearer key-full\r\n\
                 mcp-method: tools/list\r\ncontent-length: {}\r\n\r\n{list}",
                list.len()
            ),
        ),
        case("prompt allowed", rpc("prompts/get", r#"{"name":"greet"}"#)),
        case(
            "prompt outside the allow-list",
            rpc("prompts/get", r#"{"name":"leak"}"#),
        ),
        case(
            "resource by prefix",
            rpc("resources/read", r#"{"uri":"file:///docs/a.md"}"#),
        ),
        case(
            "resource outside the allow-list",
            rpc("resources/read", r#"{"uri":"file:///etc/passwd"}"#),
        ),
        case(
            "subscription outside the allow-list",
            rpc("resources/subscribe", r#"{"uri":"file:///etc/passwd"}"#),
        ),
    ];
    let mut cases = cases;
    for name in [
        "rate limit 1",
        "rate limit 2",
        "rate limit 3",
        "rate limit 4",
        "rate limit 5",
        "rate limit 6: refused",
    ] {
        cases.push(case(name, post("/mcp/echo", &bearer("key-limited"), &body)));
    }
    let mut differences = Vec::new();
    let mut statuses = Vec::new();
    for case in &cases {
        let a = run(&fast, case).await;
        let b = run(&pingora, case).await;
        statuses.push((case.name, a.status));
        if a != b {
            differences.push(format!(
                "{}:\n  fast path: {a:?}\n  pingora:   {b:?}",
                case.name
            ));
        }
        if case.name.starts_with("allowed tool") {
            assert!(!a.body.contains("authorization"), "{}", a.body);
            assert!(
                a.body.contains("x-service-key: proxy-own-credential"),
                "{}",
                a.body
            );
        }
    }
    assert!(
        differences.is_empty(),
        "the engines differ:\n{}",
        differences.join("\n")
    );
    let want = [
        401, 401, 401, 403, 200, 200, 403, 400, 400, 200, 200, 403, 200, 403, 403, 200, 200, 200,
        200, 200, 429,
    ];
    let got: Vec<u16> = statuses.iter().map(|(_, s)| *s).collect();
    assert_eq!(got, want, "{statuses:?}");
    assert!(
        fast.dir
            .metric("mcp_fleet_request_paths_total{path=\"fast\"}")
            >= 3.0
    );
}
