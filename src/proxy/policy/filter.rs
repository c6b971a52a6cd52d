//! The answer of a `tools/list`, `prompts/list` or `resources/list`, with only the entries the
//! category's allow-list lets the caller use: a caller is not shown tools it would be refused.
//! Works on a JSON answer (whole) and on an event stream (event by event, as events complete,
//! so a stream is never held back beyond one event).

use crate::config::{CategoryAuth, Pattern};
use crate::upstream::{CategoryAccess, UpstreamSet};
use serde_json::Value;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Tools,
    Prompts,
    Resources,
}

impl ListKind {
    fn field(self) -> &'static str {
        match self {
            Self::Tools => "tools",
            Self::Prompts => "prompts",
            Self::Resources => "resources",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Self::Resources => "uri",
            _ => "name",
        }
    }

    fn list(self, rules: &CategoryAuth) -> Option<&Vec<Pattern>> {
        match self {
            Self::Tools => rules.tools.as_ref(),
            Self::Prompts => rules.prompts.as_ref(),
            Self::Resources => rules.resources.as_ref(),
        }
    }
}

/// One answer's filter.
pub struct ListFilter {
    kind: ListKind,
    access: Arc<CategoryAccess>,
    category: Arc<str>,
    /// An event stream's bytes not yet making a whole event.
    pending: Vec<u8>,
}

impl ListFilter {
    pub fn new(kind: ListKind, set: &UpstreamSet) -> Self {
        Self {
            kind,
            access: Arc::clone(&set.access),
            category: Arc::clone(&set.name),
            pending: Vec::new(),
        }
    }

    /// A JSON-RPC message with the list's disallowed entries taken out; `None`: not a list
    /// answer (passed on as it was).
    fn message(&self, json: &[u8]) -> Option<Vec<u8>> {
        let mut value: Value = serde_json::from_slice(json).ok()?;
        let entries = value
            .get_mut("result")?
            .get_mut(self.kind.field())?
            .as_array_mut()?;
        let patterns = self.kind.list(&self.access.auth)?;
        let key = self.kind.key();
        let before = entries.len();
        entries.retain(|e| {
            e.get(key)
                .and_then(Value::as_str)
                .is_some_and(|n| patterns.iter().any(|p| p.matches(n)))
        });
        let hidden = before - entries.len();
        if hidden > 0 {
            crate::metrics::list_filtered(&self.category, hidden);
        }
        serde_json::to_vec(&value).ok()
    }

    /// A whole JSON answer body.
    pub fn json(&self, body: &[u8]) -> Vec<u8> {
        self.message(body).unwrap_or_else(|| body.to_vec())
    }

    /// Bytes of an event stream as they come; returns what may be sent on (whole events).
    pub fn events(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.pending.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(self.pending.len());
        let mut start = 0;
        while let Some((end, next)) = event_end(&self.pending[start..]) {
            let event = &self.pending[start..start + end];
            self.event(event, &mut out);
            out.extend_from_slice(&self.pending[start + end..start + next]);
            start += next;
        }
        self.pending.drain(..start);
        out
    }

    /// What is left when the stream ends (an unterminated last event, passed on as it is).
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }

    /// One event (without its blank line): its `data` lines are the message; other lines
    /// (`id`, `event`, comments) are kept as they were.
    fn event(&self, event: &[u8], out: &mut Vec<u8>) {
        let mut data = Vec::new();
        let mut others = Vec::new();
        for line in event.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(d) = line.strip_prefix(b"data:") {
                if !data.is_empty() {
                    data.push(b'\n');
                }
                data.extend_from_slice(d.strip_prefix(b" ").unwrap_or(d));
            } else {
                others.push(line);
            }
        }
        match (data.is_empty(), self.message(&data)) {
            (false, Some(rewritten)) => {
                for line in others {
                    out.extend_from_slice(line);
                    out.push(b'\n');
                }
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(&rewritten);
                out.push(b'\n');
            }
            _ => out.extend_from_slice(event),
        }
    }
}

/// Where the first event of `buf` ends: (end of its lines, start of the next event).
fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some((i + 1, i + 2));
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some((i + 1, i + 3));
            }
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter() -> ListFilter {
        ListFilter {
            kind: ListKind::Tools,
            access: Arc::new(CategoryAccess {
                auth: CategoryAuth {
                    tools: Some(vec![Pattern::parse("echo"), Pattern::parse("read_*")]),
                    ..Default::default()
                },
                upstream_headers: Vec::new(),
            }),
            category: "c".into(),
            pending: Vec::new(),
        }
    }

    #[test]
    fn a_json_list_keeps_only_allowed_entries() {
        let body = br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo"},{"name":"drop"},{"name":"read_file"}]}}"#;
        let out: Value = serde_json::from_slice(&filter().json(body)).expect("json");
        let names: Vec<&str> = out["result"]["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .map(|t| t["name"].as_str().expect("name"))
            .collect();
        assert_eq!(names, ["echo", "read_file"]);
        assert_eq!(out["id"], 1);
    }

    #[test]
    fn events_are_filtered_as_they_complete_whatever_the_chunks() {
        let stream = b"event: message\nid: 7\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\nevent: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"tools\":[{\"name\":\"drop\"},{\"name\":\"echo\"}]}}\r\n\r\n";
        for split in [1, 5, 40, stream.len()] {
            let mut f = filter();
            let mut out = Vec::new();
            for chunk in stream.chunks(split) {
                out.extend(f.events(chunk));
            }
            out.extend(f.finish());
            let text = String::from_utf8(out).expect("utf-8");
            assert!(text.contains(
                "id: 7\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n"
            ));
            assert!(text.contains(r#""tools":[{"name":"echo"}]"#), "{text}");
            assert!(!text.contains("drop"));
        }
    }
}
