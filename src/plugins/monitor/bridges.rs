//! The stdio bridges' counts in `/metrics`: summed per category from `/servers` (their one
//! source) at each scrape.

use crate::metrics::{self, metrics};

/// The stdio bridges' counts, summed per category (from `/servers`, their one source).
pub(super) fn mirror(servers: &[crate::api::ServerInfo]) {
    let m = metrics();
    for (c, t) in crate::api::StdioInfo::by_category(servers) {
        m.stdio_children
            .with_label_values(&[c])
            .set(t.children as i64);
        m.stdio_sessions
            .with_label_values(&[c])
            .set(t.sessions as i64);
        metrics::mirror(&m.stdio_spawns.with_label_values(&[c]), t.spawns);
        metrics::mirror(&m.stdio_reaps.with_label_values(&[c]), t.reaps);
        for (cause, n) in [
            ("stopped", t.exits.stopped),
            ("exited", t.exits.exited),
            ("crashed", t.exits.crashed),
            ("oom", t.exits.oom),
        ] {
            metrics::mirror(&m.stdio_exits.with_label_values(&[c, cause]), n);
        }
        metrics::mirror(
            &m.stdio_lines_refused.with_label_values(&[c, "not_json"]),
            t.non_json_lines,
        );
        metrics::mirror(
            &m.stdio_lines_refused.with_label_values(&[c, "oversized"]),
            t.oversized_lines,
        );
        metrics::mirror(&m.stdio_outlived.with_label_values(&[c]), t.outlived);
    }
}
