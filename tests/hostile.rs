//! Hostile client input through the real proxy: foreign Origins, oversized bodies and URIs are
//! refused with the right status and a JSON-RPC body, and never reach a server.

mod common;

use common::fake::{self, Behaviour};
use common::{http, start_backend, FleetDir, Sections};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_origins_oversized_bodies_and_long_uris_never_reach_a_server() {
    let (hole, counts) = fake::spawn(Behaviour::BlackHole).await;
    let port = common::free_port();
    let _backend = start_backend("ok", port);
    let dir = FleetDir::with_sections(
        &[],
        &[
            ("trap", vec![([127, 0, 0, 1], hole).into()]),
            ("ok", vec![([127, 0, 0, 1], port).into()]),
        ],
        &Sections {
            proxy: "max_body = \"64KiB\"\nmax_uri = 1024",
            health: "enabled = false",
            ..Sections::default()
        },
    );
    let _serve = dir.serve();
    let c = http::client();
    let trap = format!("{}/mcp/trap", dir.base());
    let ok = format!("{}/mcp/ok", dir.base());
    let expect_rpc_error = |status: u16, want: u16, body: &str| {
        assert_eq!(status, want, "{body}");
        let v: serde_json::Value = serde_json::from_str(body).expect("JSON-RPC error body");
        assert_eq!(v["jsonrpc"], "2.0");
        assert!(v["error"]["message"].is_string());
    };

    // DNS rebinding: a page on another site must not reach the servers.
    for origin in [
        "http://evil.example",
        "https://localhost:3000",
        "null",
        "http://localhost.evil.example",
    ] {
        let r = c
            .post(&trap)
            .header("origin", origin)
            .header("accept", http::ACCEPT)
            .json(&http::stateless_echo("x"))
            .send()
            .await
            .expect("send");
        let status = r.status().as_u16();
        expect_rpc_error(status, 403, &r.text().await.unwrap_or_default());
    }
    // Loopback origins and clients without Origin pass.
    for origin in [
        Some("http://localhost:5173"),
        Some("http://127.0.0.1:8080"),
        None,
    ] {
        let mut req = c
            .post(&ok)
            .header("content-type", "application/json")
            .header("accept", http::ACCEPT)
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", "echo");
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        let r = req
            .json(&http::stateless_echo("hi"))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), 200, "{origin:?}");
    }

    // A body over proxy.max_body: 413, by its declared length ...
    let big = vec![b'x'; 100 * 1024];
    let r = c.post(&trap).body(big.clone()).send().await.expect("send");
    let status = r.status().as_u16();
    expect_rpc_error(status, 413, &r.text().await.unwrap_or_default());
    // ... or, chunked, as it streams.
    let stream = futures::stream::iter(
        big.chunks(8192)
            .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let r = c
        .post(&ok)
        .header("content-type", "application/json")
        .header("accept", http::ACCEPT)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "echo")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await;
    // The proxy may cut the connection while the client still sends; when an answer arrives,
    // it is the 413.
    if let Ok(r) = r {
        assert_eq!(r.status().as_u16(), 413);
    }

    // A URI over proxy.max_uri: 414.
    let long = format!("{trap}?{}", "a".repeat(2000));
    let r = c.get(&long).send().await.expect("send");
    let status = r.status().as_u16();
    expect_rpc_error(status, 414, &r.text().await.unwrap_or_default());

    // Too many headers, or too large ones: 431.
    let mut req = c.post(&trap);
    for i in 0..120 {
        req = req.header(format!("x-h{i}"), "v");
    }
    let r = req.send().await.expect("send");
    let status = r.status().as_u16();
    expect_rpc_error(status, 431, &r.text().await.unwrap_or_default());
    let r = c
        .post(&trap)
        .header("x-big", "b".repeat(70 * 1024))
        .send()
        .await
        .expect("send");
    let status = r.status().as_u16();
    expect_rpc_error(status, 431, &r.text().await.unwrap_or_default());

    assert_eq!(counts.requests(), 0, "a refused request reached the server");
}
