//! HTTP/1.1 bytes the proxy writes itself (the fast path's requests and answer heads, and the
//! proxy's own answers on the fast path and at the gate). What goes in them is the policy's.

use super::policy::Refusal;

/// `Connection` lists `close`.
pub fn says_close(value: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
}

/// A field name as a parser accepted it (token characters only, RFC 9110 section 5.6.2) is
/// `lower`, a name of lowercase letters, digits and `-`, in any case. Setting bit 5 lowercases
/// a letter and leaves a digit or `-` as it is, and no other token character becomes one of
/// them (only controls would), so one OR per byte does what `eq_ignore_ascii_case`'s two case
/// mappings do, and eight bytes at a time (the last word overlapping the one before): on the
/// fast path these comparisons were ~1,000 instructions per request.
#[inline]
pub fn name_is(name: &str, lower: &str) -> bool {
    debug_assert!(lower
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
    let (name, lower) = (name.as_bytes(), lower.as_bytes());
    let len = name.len();
    if len != lower.len() {
        return false;
    }
    if len < 8 {
        return name.iter().zip(lower).all(|(&n, &l)| n | 0x20 == l);
    }
    let word =
        |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("eight bytes"));
    const BIT5: u64 = 0x2020_2020_2020_2020;
    let mut at = 0;
    while at + 8 < len {
        if word(name, at) | BIT5 != word(lower, at) {
            return false;
        }
        at += 8;
    }
    word(name, len - 8) | BIT5 == word(lower, len - 8)
}

pub fn header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Copies fields of a head parsed from `buf` to `out` as their sender wrote them, each from its
/// name to the end of its value (the value's trailing spaces and the sender's line ending are
/// left out, as `header` leaves them), and fields that follow one another with one CRLF between
/// in one copy: most of a request's fields are passed on in a row, and a copy per field was ~70
/// instructions. A field whose bytes are not where `buf` holds them (an empty value) goes
/// through `header`. Anything else written to `out` meanwhile goes through `write`, after
/// what is pending; `finish` writes the rest.
pub struct FieldCopy<'a> {
    out: &'a mut Vec<u8>,
    buf: &'a [u8],
    run: Option<std::ops::Range<usize>>,
}

impl<'a> FieldCopy<'a> {
    pub fn new(out: &'a mut Vec<u8>, buf: &'a [u8]) -> Self {
        FieldCopy {
            out,
            buf,
            run: None,
        }
    }

    // Inlined: a call per field (saving and restoring registers) cost more than its own work.
    #[inline(always)]
    pub fn copy(&mut self, f: &httparse::Header) {
        let base = self.buf.as_ptr() as usize;
        let start = (f.name.as_ptr() as usize).wrapping_sub(base);
        let end = (f.value.as_ptr() as usize)
            .wrapping_sub(base)
            .wrapping_add(f.value.len());
        if f.value.is_empty() || self.buf.get(start..end).is_none() || start + f.name.len() >= end {
            self.write(f.name.as_bytes(), f.value);
            return;
        }
        match &mut self.run {
            Some(run) if self.buf.get(run.end..start) == Some(b"\r\n".as_slice()) => run.end = end,
            _ => {
                self.flush();
                self.run = Some(start..end);
            }
        }
    }

    pub fn write(&mut self, name: &[u8], value: &[u8]) {
        self.flush();
        header(self.out, name, value);
    }

    pub fn finish(mut self) {
        self.flush();
    }

    fn flush(&mut self) {
        if let Some(run) = self.run.take() {
            self.out.extend_from_slice(&self.buf[run]);
            self.out.extend_from_slice(b"\r\n");
        }
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
    fn a_name_matches_as_eq_ignore_ascii_case_does_for_every_byte_the_parser_accepts_in_one() {
        let accepted: Vec<u8> = (0..=255u8)
            .filter(|&byte| {
                let mut fields = [httparse::EMPTY_HEADER; 1];
                let raw = [&[byte], b": v\r\n\r\n".as_slice()].concat();
                matches!(
                    httparse::parse_headers(&raw, &mut fields),
                    Ok(httparse::Status::Complete(_))
                )
            })
            .collect();
        assert!(
            accepted.len() > 70 && accepted.iter().all(u8::is_ascii),
            "{accepted:?}"
        );
        for target in [
            "connection",
            "mcp-session-id",
            "x-2",
            "te",
            "proxy-connection",
            "mcp-protocol-version",
        ] {
            for at in 0..target.len() {
                for &byte in &accepted {
                    let mut probe = target.as_bytes().to_vec();
                    probe[at] = byte;
                    let probe = std::str::from_utf8(&probe).expect("ASCII");
                    assert_eq!(
                        name_is(probe, target),
                        probe.eq_ignore_ascii_case(target),
                        "{probe:?} against {target:?}"
                    );
                }
            }
        }
        assert!(name_is("Content-Length", "content-length"));
        assert!(!name_is("content-lengt", "content-length"));
    }

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
    fn fields_are_copied_as_written_up_to_the_end_of_their_values_in_runs_and_in_order() {
        let head = b"POST / HTTP/1.1\r\nX-A:  one two \r\nX-Empty:\r\nX-B:3\nX-C: 4\r\nX-D: 5\r\nSkip: 6\r\nX-E: 7\r\nX-F: 8\r\n\r\n";
        let mut fields = [httparse::EMPTY_HEADER; 9];
        let mut req = httparse::Request::new(&mut fields);
        assert!(req.parse(head).expect("test setup").is_complete());
        let mut out = Vec::new();
        let mut copy = FieldCopy::new(&mut out, head);
        for f in req.headers.iter() {
            match f.name {
                "Skip" => {}
                "X-E" => {
                    copy.copy(f);
                    copy.write(b"mine", b"9");
                }
                _ => copy.copy(f),
            }
        }
        copy.finish();
        assert_eq!(
            String::from_utf8_lossy(&out),
            "X-A:  one two\r\nX-Empty: \r\nX-B:3\r\nX-C: 4\r\nX-D: 5\r\nX-E: 7\r\nmine: 9\r\nX-F: 8\r\n"
        );
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
