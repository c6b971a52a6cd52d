//! `[proxy]`: listeners, timeouts, retries, ejection, limits of what a client may send.

use super::super::defaults as d;
use super::super::fields::{bounded, duration, size, socket_addr, strategy_kind, Errors};
use super::super::model::{EjectionConfig, ProxyConfig, RetryBudget, StrategyKind};
use super::super::origin::AllowedOrigin;
use super::super::raw::RawProxy;
use super::super::ConfigError;

pub(in crate::config) fn proxy(p: &RawProxy, errors: &mut Errors) -> ProxyConfig {
    let strategy = match p.strategy.as_deref() {
        None => StrategyKind::RoundRobin,
        Some(name) => strategy_kind("proxy.strategy", name, errors),
    };
    let dur = |key: &str, v: &Option<String>, default, errors: &mut Errors| {
        duration(key, v.as_deref(), default, errors)
    };
    let proxy = ProxyConfig {
        listen: socket_addr("proxy.listen", p.listen.as_deref(), d::PROXY_LISTEN, errors),
        threads: bounded("proxy.threads", p.threads, d::THREADS, 1..=256, errors) as usize,
        strategy,
        max_retries: bounded(
            "proxy.max_retries",
            p.max_retries,
            d::MAX_RETRIES,
            0..=10,
            errors,
        ) as usize,
        connect_timeout: dur(
            "proxy.connect_timeout",
            &p.connect_timeout,
            d::CONNECT_TIMEOUT,
            errors,
        ),
        idle_timeout: dur(
            "proxy.idle_timeout",
            &p.idle_timeout,
            d::IDLE_TIMEOUT,
            errors,
        ),
        shutdown_grace: dur(
            "proxy.shutdown_grace",
            &p.shutdown_grace,
            d::SHUTDOWN_GRACE,
            errors,
        ),
        upstream_keepalive: bounded(
            "proxy.upstream_keepalive",
            p.upstream_keepalive,
            d::UPSTREAM_KEEPALIVE,
            0..=65536,
            errors,
        ) as usize,
        first_byte_timeout: dur(
            "proxy.first_byte_timeout",
            &p.first_byte_timeout,
            d::FIRST_BYTE_TIMEOUT,
            errors,
        ),
        body_timeout: dur(
            "proxy.body_timeout",
            &p.body_timeout,
            d::BODY_TIMEOUT,
            errors,
        ),
        retry_budget: RetryBudget {
            percent: bounded(
                "proxy.retry_budget_percent",
                p.retry_budget_percent,
                d::RETRY_BUDGET_PERCENT,
                0..=100,
                errors,
            ) as u32,
            min: bounded(
                "proxy.retry_budget_min",
                p.retry_budget_min,
                d::RETRY_BUDGET_MIN,
                0..=100_000,
                errors,
            ) as u32,
        },
        ejection: EjectionConfig {
            after_5xx: bounded(
                "proxy.eject_after_5xx",
                p.eject_after_5xx,
                d::EJECT_AFTER_5XX,
                0..=1000,
                errors,
            ) as u32,
            base_time: dur("proxy.eject_time", &p.eject_time, d::EJECT_TIME, errors),
            max_time: dur(
                "proxy.eject_max_time",
                &p.eject_max_time,
                d::EJECT_MAX_TIME,
                errors,
            ),
            max_percent: bounded(
                "proxy.max_ejected_percent",
                p.max_ejected_percent,
                d::MAX_EJECTED_PERCENT,
                0..=100,
                errors,
            ) as u32,
        },
        allowed_origins: allowed_origins(p.allowed_origins.as_deref(), errors),
        max_body: size(
            "proxy.max_body",
            p.max_body.as_deref(),
            d::MAX_BODY,
            0..=u64::MAX,
            errors,
        ),
        max_uri: bounded("proxy.max_uri", p.max_uri, d::MAX_URI, 64..=65536, errors) as usize,
        max_headers: bounded(
            "proxy.max_headers",
            p.max_headers,
            d::MAX_HEADERS,
            1..=255,
            errors,
        ) as usize,
        max_header_bytes: size(
            "proxy.max_header_bytes",
            p.max_header_bytes.as_deref(),
            d::MAX_HEADER_BYTES,
            1024..=(1 << 20) - 1,
            errors,
        ),
        header_timeout: dur(
            "proxy.header_timeout",
            &p.header_timeout,
            d::HEADER_TIMEOUT,
            errors,
        ),
        client_idle_timeout: dur(
            "proxy.client_idle_timeout",
            &p.client_idle_timeout,
            d::CLIENT_IDLE_TIMEOUT,
            errors,
        ),
        max_connections: bounded(
            "proxy.max_connections",
            p.max_connections,
            d::MAX_CONNECTIONS,
            1..=1_000_000,
            errors,
        ) as usize,
        max_sse_streams: bounded(
            "proxy.max_sse_streams",
            p.max_sse_streams,
            d::MAX_SSE_STREAMS,
            0..=1_000_000,
            errors,
        ) as usize,
        send_timeout: dur(
            "proxy.send_timeout",
            &p.send_timeout,
            d::SEND_TIMEOUT,
            errors,
        ),
        max_response_body: size(
            "proxy.max_response_body",
            p.max_response_body.as_deref(),
            d::MAX_RESPONSE_BODY,
            0..=u64::MAX,
            errors,
        ),
        fast_path: p.fast_path.unwrap_or(d::FAST_PATH),
        rate_limit: Default::default(),
        tls: None,
    };
    if proxy.first_byte_timeout > proxy.idle_timeout {
        errors.push(ConfigError::new(
            "proxy.first_byte_timeout",
            format!("{:?}", proxy.first_byte_timeout),
            "must not exceed proxy.idle_timeout",
        ));
    }
    proxy
}

fn allowed_origins(list: Option<&[String]>, errors: &mut Errors) -> Vec<AllowedOrigin> {
    let parse = |text: &str, errors: &mut Errors| match AllowedOrigin::parse(text, true) {
        Ok(o) => Some(o),
        Err(why) => {
            errors.push(ConfigError::new(
                "proxy.allowed_origins",
                format!("{text:?}"),
                why,
            ));
            None
        }
    };
    match list {
        Some(list) => list.iter().filter_map(|t| parse(t, errors)).collect(),
        None => d::ALLOWED_ORIGINS
            .iter()
            .filter_map(|t| parse(t, errors))
            .collect(),
    }
}
