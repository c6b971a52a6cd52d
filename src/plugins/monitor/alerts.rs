//! The seed's alert thresholds as rules over the sampled series and the fleet's state. An alert
//! that starts or stops firing is logged once and counted.

use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Alert {
    pub name: String,
    pub severity: &'static str,
    pub value: f64,
    pub threshold: f64,
    /// Seconds since the Unix epoch when it started firing.
    pub since: u64,
    pub message: String,
}

/// A rule's verdict this round: `Some((severity, value, threshold, message))` while it fires.
pub type Verdict = Option<(&'static str, f64, f64, String)>;

/// Merges this round's verdicts into the firing set, logging and counting changes.
pub fn update(firing: &mut Vec<Alert>, verdicts: Vec<(String, Verdict)>, now: u64) {
    let m = crate::metrics::metrics();
    for (name, verdict) in verdicts {
        let pos = firing.iter().position(|a| a.name == name);
        match (verdict, pos) {
            (Some((severity, value, threshold, message)), Some(i)) => {
                let a = &mut firing[i];
                a.value = value;
                a.threshold = threshold;
                a.message = message;
                a.severity = severity;
            }
            (Some((severity, value, threshold, message)), None) => {
                tracing::warn!(alert = %name, severity, value, threshold, "alert firing: {message}");
                m.alerts_fired.with_label_values(&[&name]).inc();
                m.alerts_firing.with_label_values(&[&name]).set(1);
                firing.push(Alert {
                    name,
                    severity,
                    value,
                    threshold,
                    since: now,
                    message,
                });
            }
            (None, Some(i)) => {
                let a = firing.remove(i);
                tracing::info!(alert = %a.name, "alert resolved");
                m.alerts_firing.with_label_values(&[&a.name]).set(0);
            }
            (None, None) => {}
        }
    }
}
