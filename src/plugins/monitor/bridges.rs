//! The stdio bridges' counts in `/metrics`: summed per category from `/servers` (their one
//! source) at each scrape.

use crate::metrics::{self, metrics};
use std::collections::BTreeMap;

/// The stdio bridges' counts, summed per category (from `/servers`, their one source).
pub(super) fn mirror(servers: &[crate::api::ServerInfo]) {
    let m = metrics();
    let mut by: BTreeMap<&str, crate::api::StdioInfo> = BTreeMap::new();
    for s in servers {
        let Some(i) = &s.stdio else { continue };
        let t = by.entry(s.category.as_str()).or_default();
        t.children += i.children;
        t.sessions += i.sessions;
        t.spawns += i.spawns;
        t.reaps += i.reaps;
        t.exits.stopped += i.exits.stopped;
        t.exits.exited += i.exits.exited;
        t.exits.crashed += i.exits.crashed;
        t.exits.oom += i.exits.oom;
        t.non_json_lines += i.non_json_lines;
        t.oversized_lines += i.oversized_lines;
        t.outlived += i.outlived;
    }
    for (c, t) in by {
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
