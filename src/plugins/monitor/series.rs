//! Samples of the request counters every `monitor.alerts.interval`, kept for five minutes: the
//! rates, error shares and latency percentiles the alerts and the dashboard need, computed from
//! differences between samples (so the hot path records nothing extra).

use crate::metrics::metrics;
use prometheus::core::Collector;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// Cumulative counts of one category at one instant.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub requests: u64,
    pub errors: u64,
    /// Cumulative histogram bucket counts (same bounds for every category), the total last.
    pub buckets: Vec<u64>,
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    pub unix: u64,
    pub categories: BTreeMap<String, Counts>,
    /// Machine CPU (busy, total) jiffies from /proc/stat.
    pub cpu: (u64, u64),
}

/// What happened between two samples.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Window {
    pub seconds: f64,
    pub requests: u64,
    pub rate: f64,
    pub error_rate: f64,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

/// Upper bounds of the latency buckets, +Inf last (the sample count), matching `Counts::buckets`.
pub fn bucket_bounds() -> Vec<f64> {
    let mut b = crate::metrics::BUCKETS.to_vec();
    b.push(f64::INFINITY);
    b
}

fn machine_cpu() -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let Some(line) = text.lines().next() else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

pub fn take() -> Sample {
    let mut categories: BTreeMap<String, Counts> = BTreeMap::new();
    for family in metrics().requests.collect() {
        for m in family.get_metric() {
            let mut category = "";
            let mut class = "";
            for l in m.get_label() {
                match l.name() {
                    "category" => category = l.value(),
                    "class" => class = l.value(),
                    _ => {}
                }
            }
            let n = m.get_counter().get_value() as u64;
            let c = categories.entry(category.to_string()).or_default();
            c.requests += n;
            if class == "5xx" {
                c.errors += n;
            }
        }
    }
    for family in metrics().duration.collect() {
        for m in family.get_metric() {
            let category = m
                .get_label()
                .iter()
                .find(|l| l.name() == "category")
                .map(|l| l.value().to_string())
                .unwrap_or_default();
            let h = m.get_histogram();
            let mut buckets: Vec<u64> = h
                .get_bucket()
                .iter()
                .map(|b| b.cumulative_count())
                .collect();
            buckets.push(h.get_sample_count());
            categories.entry(category).or_default().buckets = buckets;
        }
    }
    Sample {
        at: Instant::now(),
        unix: crate::upstream::clock::unix_now(),
        categories,
        cpu: machine_cpu(),
    }
}

fn quantile(bounds: &[f64], delta: &[u64], q: f64) -> Option<f64> {
    let total = *delta.last()?;
    if total == 0 {
        return None;
    }
    let target = (total as f64 * q).ceil() as u64;
    delta
        .iter()
        .position(|&c| c >= target)
        .map(|i| bounds.get(i).copied().unwrap_or(f64::INFINITY))
}

/// Differences of `new` over `old` for one category (`None`: all categories together).
pub fn window(old: &Sample, new: &Sample, category: Option<&str>, bounds: &[f64]) -> Window {
    let pick = |s: &Sample| -> Counts {
        match category {
            Some(c) => s.categories.get(c).cloned().unwrap_or_default(),
            None => s.categories.values().fold(Counts::default(), |mut acc, c| {
                acc.requests += c.requests;
                acc.errors += c.errors;
                if acc.buckets.len() < c.buckets.len() {
                    acc.buckets.resize(c.buckets.len(), 0);
                }
                for (a, b) in acc.buckets.iter_mut().zip(&c.buckets) {
                    *a += b;
                }
                acc
            }),
        }
    };
    let (a, b) = (pick(old), pick(new));
    let seconds = new.at.duration_since(old.at).as_secs_f64().max(0.001);
    let requests = b.requests.saturating_sub(a.requests);
    let errors = b.errors.saturating_sub(a.errors);
    let delta: Vec<u64> = b
        .buckets
        .iter()
        .enumerate()
        .map(|(i, v)| v.saturating_sub(a.buckets.get(i).copied().unwrap_or(0)))
        .collect();
    Window {
        seconds,
        requests,
        rate: requests as f64 / seconds,
        error_rate: if requests == 0 {
            0.0
        } else {
            errors as f64 / requests as f64
        },
        p50: quantile(bounds, &delta, 0.50),
        p95: quantile(bounds, &delta, 0.95),
        p99: quantile(bounds, &delta, 0.99),
    }
}

/// Samples kept for the dashboard (five minutes) and the alert window.
pub struct Series {
    pub samples: VecDeque<Sample>,
    keep: Duration,
}

impl Series {
    pub fn new(keep: Duration) -> Self {
        Self {
            samples: VecDeque::new(),
            keep: keep.max(Duration::from_secs(300)),
        }
    }

    /// A reload may widen the alert window: keep enough samples for it.
    pub fn keep_at_least(&mut self, window: Duration) {
        self.keep = self.keep.max(window);
    }

    pub fn push(&mut self, s: Sample) {
        self.samples.push_back(s);
        while self
            .samples
            .front()
            .is_some_and(|f| f.at.elapsed() > self.keep + Duration::from_secs(1))
        {
            self.samples.pop_front();
        }
    }

    /// The oldest sample within `span` of the newest.
    pub fn since(&self, span: Duration) -> Option<&Sample> {
        let newest = self.samples.back()?;
        self.samples
            .iter()
            .find(|s| newest.at.duration_since(s.at) <= span)
    }

    pub fn latest(&self) -> Option<&Sample> {
        self.samples.back()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_from_bucket_deltas() {
        let bounds = [0.01, 0.1, 1.0];
        // 90 requests under 10 ms, 9 under 100 ms, 1 under 1 s.
        let delta = [90, 99, 100];
        assert_eq!(quantile(&bounds, &delta, 0.5), Some(0.01));
        assert_eq!(quantile(&bounds, &delta, 0.95), Some(0.1));
        assert_eq!(quantile(&bounds, &delta, 0.995), Some(1.0));
        assert_eq!(quantile(&bounds, &[0, 0, 0], 0.5), None);
    }
}
