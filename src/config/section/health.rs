//! `[health]`: the active check every server gets.

use super::super::defaults as d;
use super::super::fields::{bounded, duration, mcp_path, Errors};
use super::super::model::{HealthConfig, HealthKind};
use super::super::raw::RawHealth;
use super::super::ConfigError;

pub(in crate::config) fn health(h: &RawHealth, errors: &mut Errors) -> HealthConfig {
    let kind = match h.kind.as_deref().unwrap_or(d::HEALTH_KIND) {
        "tcp" => HealthKind::Tcp,
        "mcp" => HealthKind::Mcp,
        "http" => HealthKind::Http {
            path: mcp_path("health.path", h.path.as_deref(), d::HEALTH_PATH, errors),
            expect_status: bounded(
                "health.expect_status",
                h.expect_status,
                d::HEALTH_EXPECT_STATUS,
                100..=599,
                errors,
            ) as u16,
        },
        other => {
            errors.push(ConfigError::new(
                "health.kind",
                format!("{other:?}"),
                "known kinds: tcp, http, mcp",
            ));
            HealthKind::Tcp
        }
    };
    let config = HealthConfig {
        enabled: h.enabled.unwrap_or(d::HEALTH_ENABLED),
        kind,
        interval: duration(
            "health.interval",
            h.interval.as_deref(),
            d::HEALTH_INTERVAL,
            errors,
        ),
        timeout: duration(
            "health.timeout",
            h.timeout.as_deref(),
            d::HEALTH_TIMEOUT,
            errors,
        ),
        unhealthy_threshold: bounded(
            "health.unhealthy_threshold",
            h.unhealthy_threshold,
            d::UNHEALTHY_THRESHOLD,
            1..=100,
            errors,
        ) as u32,
        healthy_threshold: bounded(
            "health.healthy_threshold",
            h.healthy_threshold,
            d::HEALTHY_THRESHOLD,
            1..=100,
            errors,
        ) as u32,
        concurrency: bounded(
            "health.concurrency",
            h.concurrency,
            d::HEALTH_CONCURRENCY,
            1..=4096,
            errors,
        ) as usize,
    };
    if config.timeout > config.interval {
        errors.push(ConfigError::new(
            "health.timeout",
            format!("{:?}", config.timeout),
            "must not exceed health.interval",
        ));
    }
    config
}
