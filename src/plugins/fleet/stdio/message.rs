//! JSON-RPC messages as the bridge handles them: what a message is, its line on a child's stdin
//! (compact JSON, so a client's pretty-printed body never puts a newline inside a message), the
//! errors the bridge answers with, and the id of an answer too long to parse.

use serde_json::{json, Map, Value};

pub type Msg = Map<String, Value>;

/// The protocol revision the bridge speaks to children and to session clients.
pub const PROTOCOL: &str = "2025-11-25";
/// The stateless revision; its requests are served by the server's shared child.
pub const STATELESS: &str = "2026-07-28";

/// JSON-RPC error codes the bridge answers with.
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const PARSE_ERROR: i64 = -32700;
pub const INTERNAL_ERROR: i64 = -32603;
/// Implementation-defined server error (the range -32000 to -32099): the bridge cannot take
/// the request now (no session slot, no child slot).
pub const UNAVAILABLE: i64 = -32000;
/// Unknown or ended session (what the MCP SDKs send with 404).
pub const SESSION_NOT_FOUND: i64 = -32001;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Request,
    Notification,
    Response,
}

pub fn shape(m: &Msg) -> Option<Shape> {
    match (m.get("method").and_then(Value::as_str), m.get("id")) {
        (Some(_), Some(id)) if !id.is_null() => Some(Shape::Request),
        (Some(_), _) => Some(Shape::Notification),
        (None, Some(_)) if m.contains_key("result") || m.contains_key("error") => {
            Some(Shape::Response)
        }
        _ => None,
    }
}

pub fn method(m: &Msg) -> &str {
    m.get("method").and_then(Value::as_str).unwrap_or_default()
}

/// One line for a child's stdin: compact JSON (serde_json escapes every newline inside a
/// string), then `\n`.
pub fn line(m: &Msg) -> Vec<u8> {
    let mut out = serde_json::to_vec(m).unwrap_or_default();
    out.push(b'\n');
    out
}

pub fn error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

pub fn result(id: Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// `params._meta.progressToken`, where the request asks for progress.
pub fn progress_token(m: &Msg) -> Option<&Value> {
    m.get("params")?.get("_meta")?.get("progressToken")
}

pub fn set_progress_token(m: &mut Msg, token: Value) {
    if let Some(meta) = m
        .get_mut("params")
        .and_then(|p| p.get_mut("_meta"))
        .and_then(Value::as_object_mut)
    {
        meta.insert("progressToken".into(), token);
    }
}

/// The `_meta` keys a 2026-07-28 request carries its protocol envelope in.
const ENVELOPE: [&str; 3] = [
    "io.modelcontextprotocol/protocolVersion",
    "io.modelcontextprotocol/clientInfo",
    "io.modelcontextprotocol/clientCapabilities",
];

/// Takes a stateless request's envelope off, for a child that was initialised in the
/// handshake era (2025-11-25): such servers refuse a request carrying it (the Python SDK's do),
/// and the bridge already told the child who it talks to at `initialize`.
pub fn strip_envelope(m: &mut Msg) {
    let Some(params) = m.get_mut("params").and_then(Value::as_object_mut) else {
        return;
    };
    let empty = match params.get_mut("_meta").and_then(Value::as_object_mut) {
        Some(meta) => {
            for k in ENVELOPE {
                meta.remove(k);
            }
            meta.is_empty()
        }
        None => false,
    };
    if empty {
        params.remove("_meta");
    }
}

/// The bridge's own id of an answer line too long to parse: its ids are numbers, and children
/// write `"id"` either first or last (the TypeScript SDK puts it after the result), so the
/// first bytes and the last bytes of the line are searched.
pub fn sniff_id(head: &[u8], tail: &[u8]) -> Option<u64> {
    let after = |hay: &[u8], last: bool| -> Option<u64> {
        let key = b"\"id\":";
        let mut positions = hay.windows(key.len()).enumerate().filter(|(_, w)| w == key);
        let at = if last {
            positions.next_back()
        } else {
            positions.next()
        }?
        .0 + key.len();
        let digits: Vec<u8> = hay[at..]
            .iter()
            .skip_while(|b| b.is_ascii_whitespace())
            .take_while(|b| b.is_ascii_digit())
            .copied()
            .collect();
        std::str::from_utf8(&digits).ok()?.parse().ok()
    };
    // Only where a top-level id can be: within the first or last few bytes (a nested "id" of
    // the result must not fail another request).
    let head = &head[..head.len().min(32)];
    let tail = &tail[tail.len().saturating_sub(64)..];
    after(head, false).or_else(|| after(tail, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(v: Value) -> Msg {
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn shapes_follow_json_rpc() {
        assert_eq!(
            shape(&msg(json!({"jsonrpc":"2.0","id":1,"method":"ping"}))),
            Some(Shape::Request)
        );
        assert_eq!(
            shape(&msg(
                json!({"jsonrpc":"2.0","method":"notifications/initialized"})
            )),
            Some(Shape::Notification)
        );
        assert_eq!(
            shape(&msg(json!({"jsonrpc":"2.0","id":"a","result":{}}))),
            Some(Shape::Response)
        );
        assert_eq!(shape(&msg(json!({"jsonrpc":"2.0","id":3}))), None);
    }

    #[test]
    fn a_pretty_printed_body_becomes_one_line() {
        let body = "{\n  \"jsonrpc\": \"2.0\",\n  \"id\": 1,\n  \"method\": \"tools/call\",\n  \"params\": {\"text\": \"two\\nlines\"}\n}";
        let m: Msg = serde_json::from_str(body).expect("json");
        let l = line(&m);
        assert_eq!(l.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(l.last(), Some(&b'\n'));
    }

    #[test]
    fn the_stateless_envelope_comes_off_and_the_rest_of_meta_stays() {
        let mut m = msg(
            json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t",
            "_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",
                     "io.modelcontextprotocol/clientCapabilities":{},"progressToken":"p"}}}),
        );
        strip_envelope(&mut m);
        assert_eq!(m["params"]["_meta"], json!({"progressToken": "p"}));
        let mut m = msg(
            json!({"jsonrpc":"2.0","id":1,"method":"tools/list","params":{
            "_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}),
        );
        strip_envelope(&mut m);
        assert_eq!(m["params"], json!({}));
    }

    #[test]
    fn the_id_of_a_long_line_is_found_at_either_end() {
        assert_eq!(
            sniff_id(
                b"{\"jsonrpc\":\"2.0\",\"id\": 42,\"result\":{\"x\":\"",
                b"xx\"}}"
            ),
            Some(42)
        );
        assert_eq!(
            sniff_id(
                b"{\"result\":{\"text\":\"aaa",
                b"aaa\"}},\"jsonrpc\":\"2.0\",\"id\":7}"
            ),
            Some(7)
        );
        assert_eq!(sniff_id(b"{\"result\":\"", b"\"}"), None);
        let nested = b"{\"result\":{\"content\":[{\"type\":\"text\",\"id\":5,\"text\":\"a\"}";
        assert_eq!(
            sniff_id(nested, b"...\"}"),
            None,
            "a nested id is not the answer's"
        );
    }
}
