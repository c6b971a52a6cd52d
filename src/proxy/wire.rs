//! HTTP/1.1 bytes the proxy writes itself (the fast path's requests and answer heads, and the
//! proxy's own answers on the fast path and at the gate). What goes in them is the policy's.

use super::policy::Refusal;

/// `Connection` lists `close`.
pub fn says_close(value: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
}

pub fn header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Copies a field of the head parsed from `buf` to `out` as its sender wrote it, from its name to
/// the end of its value (one copy, not four; the value's trailing spaces and the sender's line
/// ending are left out, as `header` leaves them), or through `header` when the field's bytes
/// are not where `buf` holds them (an empty value).
pub fn field_as_written(out: &mut Vec<u8>, buf: &[u8], f: &httparse::Header) {
    let base = buf.as_ptr() as usize;
    let start = (f.name.as_ptr() as usize).wrapping_sub(base);
    let end = (f.value.as_ptr() as usize)
        .wrapping_sub(base)
        .wrapping_add(f.value.len());
    match buf.get(start..end) {
        Some(line) if !f.value.is_empty() && start + f.name.len() < end => {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
        _ => header(out, f.name.as_bytes(), f.value),
    }
}

/// The status line of an answer whose head is `raw`, for the client: the server's own line when
/// it is already what `status_line` would write (`HTTP/1.1`, a reason, CRLF), else rewritten.
pub fn answer_status_line(out: &mut Vec<u8>, raw: &[u8], status: u16, reason: Option<&str>) {
    if let (Some(reason), Some(end)) = (reason, raw.iter().position(|&b| b == b'\n')) {
        let line = &raw[..=end];
        // "HTTP/1.1 " + three digits + " " + the reason + CRLF, and nothing else.
        if !reason.is_empty()
            && line.starts_with(b"HTTP/1.1 ")
            && line.len() == 9 + 3 + 1 + reason.len() + 2
            && line.ends_with(b"\r\n")
        {
            out.extend_from_slice(line);
            return;
        }
    }
    status_line(out, status, reason);
}

pub fn status_line(out: &mut Vec<u8>, status: u16, reason: Option<&str>) {
    let reason = reason
        .filter(|r| !r.is_empty())
        .or_else(|| {
            http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
        })
        .unwrap_or("");
    out.extend_from_slice(b"HTTP/1.1 ");
    decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `n` in decimal, without going through a `String`.
pub fn decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The whole answer of a refusal.
pub fn answer(refusal: &Refusal) -> Vec<u8> {
    let body = refusal.body();
    let mut out = Vec::with_capacity(body.len() + 192);
    status_line(&mut out, refusal.status, None);
    out.extend_from_slice(b"content-length: ");
    decimal(&mut out, body.len() as u64);
    out.extend_from_slice(b"\r\n");
    for (name, value) in refusal.fields() {
        header(&mut out, name.as_bytes(), value.as_bytes());
    }
    if refusal.close {
        // Say so, or a client that pools connections sends its next request into a closing
        // socket.
        header(&mut out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::super::policy::{code, content_length};
    use super::*;

    #[test]
    fn an_answer_keeps_its_status_line_only_when_it_is_the_one_written_otherwise() {
        let line = |raw: &[u8]| {
            let mut fields = [httparse::EMPTY_HEADER; 4];
            let mut head = httparse::Response::new(&mut fields);
            assert!(head.parse(raw).expect("test setup").is_complete());
            let mut out = Vec::new();
            answer_status_line(&mut out, raw, head.code.unwrap_or(0), head.reason);
            let mut rewritten = Vec::new();
            status_line(&mut rewritten, head.code.unwrap_or(0), head.reason);
            assert_eq!(out, rewritten, "{:?}", String::from_utf8_lossy(raw));
            out
        };
        assert_eq!(line(b"HTTP/1.1 200 OK\r\n\r\n"), b"HTTP/1.1 200 OK\r\n");
        assert_eq!(
            line(b"HTTP/1.1 404 Not Found\r\na: 1\r\n\r\n"),
            b"HTTP/1.1 404 Not Found\r\n"
        );
        // Rewritten: another version, no reason, a bare LF, a reason with spaces around it.
        assert_eq!(line(b"HTTP/1.0 200 OK\r\n\r\n"), b"HTTP/1.1 200 OK\r\n");
        assert_eq!(line(b"HTTP/1.1 200 \r\n\r\n"), b"HTTP/1.1 200 OK\r\n");
        assert_eq!(
            line(b"HTTP/1.1 202 Accepted\n\n"),
            b"HTTP/1.1 202 Accepted\r\n"
        );
        assert_eq!(line(b"HTTP/1.1 200  OK \r\n\r\n"), b"HTTP/1.1 200  OK \r\n");
    }

    #[test]
    fn a_field_is_copied_as_written_up_to_the_end_of_its_value() {
        let head = b"POST / HTTP/1.1\r\nX-A:  one two \r\nX-Empty:\r\nX-B:3\n\r\n";
        let mut fields = [httparse::EMPTY_HEADER; 4];
        let mut req = httparse::Request::new(&mut fields);
        assert!(req.parse(head).expect("test setup").is_complete());
        let mut out = Vec::new();
        for f in req.headers.iter() {
            field_as_written(&mut out, head, f);
        }
        assert_eq!(out, b"X-A:  one two\r\nX-Empty: \r\nX-B:3\r\n");
    }

    #[test]
    fn lengths_and_connection_tokens() {
        assert_eq!(content_length(b"42"), Some(42));
        assert_eq!(content_length(b" 7 "), Some(7));
        assert_eq!(content_length(b"00012"), Some(12));
        // Nineteen digits is the longest accepted: every such number fits a u64.
        assert_eq!(
            content_length(b"9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        for bad in [
            &b""[..],
            b" ",
            b"-1",
            b"+1",
            b"1,1",
            b"1 2",
            b"12a",
            b"0x10",
            b"10000000000000000000",
            b"99999999999999999999",
        ] {
            assert_eq!(content_length(bad), None, "{bad:?}");
        }
        let mut out = Vec::new();
        for n in [0, 7, 204, 18_446_744_073_709_551_615] {
            out.clear();
            decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
        assert!(says_close(b"keep-alive, Close"));
        assert!(!says_close(b"keep-alive"));
        assert!(!says_close(b"closed"));
    }

    #[test]
    fn error_answers_are_complete_http_with_a_jsonrpc_body() {
        let a = String::from_utf8(answer(&Refusal::no_server())).expect("a well-formed answer");
        let (head, body) = a.split_once("\r\n\r\n").expect("a well-formed answer");
        assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(head.contains("retry-after: 1") && head.contains("connection: close"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).expect("a well-formed answer");
        assert_eq!(v["error"]["code"], code::UNAVAILABLE);
        assert_eq!(v["id"], serde_json::Value::Null);
    }
}
