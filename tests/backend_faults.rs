//! Servers that fail in every way a process can, behind the real proxy: reset mid-answer,
//! a truncated chunk, garbage instead of HTTP, a 10 GiB body, silence, one byte a second.
//! Each time the client gets a clean error within the timeouts, the server is ejected, and a
//! client of another category (on a healthy server) sees nothing but 200s throughout.

mod common;

use common::fake::{self, Behaviour};
use common::{http, start_backend, FleetDir, Sections};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One stateless call; (status, Ok(body) or Err(what broke while reading it)).
async fn call(c: &reqwest::Client, url: &str) -> (u16, Result<String, String>) {
    let resp = c
        .post(url)
        .header("content-type", "application/json")
        .header("accept", http::ACCEPT)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "echo")
        .json(&http::stateless_echo("x"))
        .send()
        .await
        .expect("the proxy answers");
    let status = resp.status().as_u16();
    (status, resp.text().await.map_err(|e| format!("{e:?}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_server_costs_one_clean_error_and_is_ejected() {
    // (category, behaviour, the answer the client must get when it meets the fault)
    let faults: [(&str, Behaviour, u16); 6] = [
        ("reset", Behaviour::ResetMidHead, 502),
        ("truncated", Behaviour::TruncatedChunk, 200),
        ("garbage", Behaviour::Garbage, 502),
        ("huge", Behaviour::HugeBody, 502),
        ("silent", Behaviour::Silent, 504),
        ("dribble", Behaviour::Dribble, 504),
    ];
    // A backend belongs to one category: a healthy server for each.
    let mut goods = Vec::new();
    let mut good_server = |name: &str| {
        let port = common::free_port();
        goods.push(start_backend(name, port));
        port
    };
    let calm = good_server("calm");
    let mut statics = vec![("calm", vec![([127, 0, 0, 1], calm).into()])];
    let mut fakes = Vec::new();
    for (name, behaviour, _) in &faults {
        let (port, counts) = fake::spawn(*behaviour).await;
        let good = good_server(name);
        fakes.push(counts);
        statics.push((
            *name,
            vec![([127, 0, 0, 1], port).into(), ([127, 0, 0, 1], good).into()],
        ));
    }
    let dir = FleetDir::with_sections(
        &[],
        &statics,
        &Sections {
            proxy:
                "first_byte_timeout = \"1s\"\neject_time = \"60s\"\nmax_response_body = \"1MiB\"",
            health: "enabled = false",
            ..Sections::default()
        },
    );
    let _serve = dir.serve();
    let c = http::client();

    // A client of another category, calling all along.
    let stop = Arc::new(AtomicBool::new(false));
    let calm_ok = Arc::new(AtomicUsize::new(0));
    let bystander = {
        let (c, url) = (c.clone(), format!("{}/mcp/calm", dir.base()));
        let (stop, calm_ok) = (Arc::clone(&stop), Arc::clone(&calm_ok));
        tokio::spawn(async move {
            let mut other = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match call(&c, &url).await {
                    (200, Ok(_)) => {
                        calm_ok.fetch_add(1, Ordering::SeqCst);
                    }
                    unexpected => other.push(unexpected),
                }
            }
            other
        })
    };

    for ((name, _, want), counts) in faults.iter().zip(&fakes) {
        let url = format!("{}/mcp/{name}", dir.base());
        let mut faulted = 0;
        for _ in 0..6 {
            let started = Instant::now();
            let (status, body) = call(&c, &url).await;
            let took = started.elapsed();
            match (status, &body) {
                (200, Ok(text)) if text.contains("\"result\"") => {}
                _ => {
                    faulted += 1;
                    assert_eq!(status, *want, "{name}: {body:?}");
                    assert!(
                        took < Duration::from_secs(5),
                        "{name}: the error took {took:?}"
                    );
                    match body {
                        // An error before the answer started: a JSON-RPC body says why.
                        Ok(text) => {
                            let v: serde_json::Value =
                                serde_json::from_str(&text).expect("JSON-RPC error body");
                            assert!(v["error"]["message"].is_string(), "{name}: {text}");
                        }
                        // After it started (a 200 head was passed on): the client sees the
                        // answer cut short, never a truncated answer that looks whole.
                        Err(e) => assert_eq!(*want, 200, "{name}: {e}"),
                    }
                }
            }
        }
        assert_eq!(
            faulted, 1,
            "{name}: the faulty server must be met once, then ejected"
        );
        assert!(
            counts.requests() >= 1,
            "{name}: the fault was never reached"
        );
        let stats = http::stats(&c, &dir.base()).await;
        let ejected = http::servers(&stats, name)
            .iter()
            .filter(|s| s["ejected_ms"].as_u64() > Some(0))
            .count();
        assert_eq!(ejected, 1, "{name}: {stats}");
    }

    stop.store(true, Ordering::SeqCst);
    let other = bystander.await.expect("bystander");
    assert!(other.is_empty(), "the bystander noticed: {other:?}");
    assert!(calm_ok.load(Ordering::SeqCst) > 10);
    dir.assert_engine();
}
