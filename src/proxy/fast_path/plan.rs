//! The fast path's reading of a request head: one parse, in one pass what admission reads and
//! what the server gets (after room left for its request line); a head this engine cannot
//! carry is Pingora's path's (`Plan::Defer`).

use super::*;

impl FastPath {
    /// Decides on the head at the front of `buf`, from a client at `client_ip`.
    pub fn plan(&self, buf: &[u8], client_ip: Option<std::net::IpAddr>) -> Plan {
        // Slots the parse fills, not set up before (2 KiB of empty fields per head otherwise).
        let mut fields = [const { std::mem::MaybeUninit::uninit() }; MAX_FIELDS];
        let mut req = httparse::Request::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(
            &mut req,
            buf,
            &mut fields,
        );
        let head_len = match parsed {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() <= HEAD_LIMIT => return Plan::Partial,
            _ => return Plan::Defer,
        };
        let snapshot = self.registry.load();
        // The three methods of the Streamable HTTP transport: calls, the standalone event
        // stream and the end of a session.
        let verb = match req.method {
            Some("POST") => "POST",
            Some("GET") => "GET",
            Some("DELETE") => "DELETE",
            _ => return Plan::Defer,
        };
        if !snapshot.proxy.fast_path || req.version != Some(1) {
            return Plan::Defer;
        }
        let Some(target) = req.path else {
            return Plan::Defer;
        };
        // A byte search: `split_once` on a `char` costs ~100 instructions on a short path.
        let (path, query) = match target.bytes().position(|b| b == b'?') {
            Some(at) => (&target[..at], Some(&target[at + 1..])),
            None => (target, None),
        };

        // One pass for what admission reads and what this engine cannot carry, copying the
        // fields the server gets after room left for the request line (which names the
        // category's path, known only once the request is admitted).
        let mut upstream_head = Scratch::take(LINE_ROOM + head_len + 128);
        upstream_head.resize(LINE_ROOM, 0);
        let mut length = None;
        let mut coding = None;
        let mut host = None;
        let mut token = None;
        let mut origin = None;
        let mut method_field = None;
        let mut name_field = None;
        let mut authorization = None;
        let mut field_bytes = 0u64;
        let mut client_close = false;
        let mut copy = wire::FieldCopy::new(&mut upstream_head, buf);
        for f in req.headers.iter() {
            field_bytes += (f.name.len() + f.value.len()) as u64;
            let (once, passed_on) = match field(f.name) {
                Field::Other => {
                    copy.copy(f);
                    continue;
                }
                // Hop-by-hop: honoured here, never passed on.
                Field::Connection => {
                    match persistence(f.value) {
                        Some(close) => client_close |= close,
                        None => return Plan::Defer,
                    }
                    continue;
                }
                Field::ForwardedHost => continue,
                Field::NeedsPingora => return Plan::Defer,
                Field::ContentLength => (&mut length, true),
                // Passed on below, once the body is known not to be empty.
                Field::TransferEncoding => (&mut coding, false),
                Field::Host => (&mut host, false),
                Field::Session => (&mut token, false),
                Field::Origin => (&mut origin, true),
                Field::McpMethod => (&mut method_field, true),
                Field::McpName => (&mut name_field, true),
                // The client's credential is this proxy's to check, never a server's.
                Field::Authorization => (&mut authorization, false),
            };
            // A field given twice is for Pingora's path to read (and refuse where it must).
            if once.replace(f.value).is_some() {
                return Plan::Defer;
            }
            if passed_on {
                copy.copy(f);
            }
        }
        copy.finish();
        let framing = policy::framing(length, coding);
        let mut dechunked = None;
        let body_len = match framing {
            // Over `proxy.max_body`, admission refuses it below (on Pingora's path).
            Ok(BodyFraming::Length(n)) if verb == "POST" || n == 0 => {
                usize::try_from(n).unwrap_or(usize::MAX)
            }
            // A GET or DELETE carries no body.
            Ok(BodyFraming::None) if verb != "POST" => 0,
            // Read whole before anything else, as on Pingora's path, so that broken framing is
            // answered (there) and nothing of it reaches a server.
            Ok(BodyFraming::Chunked) if verb == "POST" => {
                let scratch = Scratch::take(buf.len() - head_len + 32);
                match chunked::request(&buf[head_len..], policy::CHUNKED_BODY_LIMIT, scratch) {
                    chunked::Request::Whole { raw_len, body } => {
                        if let (Some(coding), false) = (coding, body.payload().is_empty()) {
                            wire::header(&mut upstream_head, b"transfer-encoding", coding);
                        }
                        dechunked = Some(body);
                        raw_len
                    }
                    chunked::Request::Partial => return Plan::Partial,
                    chunked::Request::Decline => return Plan::Defer,
                }
            }
            _ => return Plan::Defer,
        };
        let head = Head {
            method: verb,
            path,
            query,
            uri_len: target.len(),
            fields: req.headers.len(),
            field_bytes,
            framing,
            origin,
            session: token,
            authorization,
            client_ip,
            routing: RoutingFields {
                method: method_field,
                name: name_field,
            },
        };
        let hash_field = |name: &http::HeaderName| {
            req.headers
                .iter()
                // Any configured name (it may hold any token character): not `is`.
                .find(|f| f.name.eq_ignore_ascii_case(name.as_str()))
                .map(|f| f.value)
        };
        let codec = self.codec.load();
        // The request's one reading of the clock until it goes out: admission's, and where
        // the exchange's deadlines and duration start.
        let started = Instant::now();
        let started_ms = clock::ms_at(started);
        let cx = Context {
            codec: &codec,
            edge: &self.edge,
            now_ms: started_ms,
            keys_fetched: false,
        };
        let admitted = match admit(&snapshot, &cx, &head, hash_field) {
            Admission::Admitted(a) => a,
            // Refusals are Pingora's path's to answer (with lingering close where needed), as
            // is a token whose signing key must be fetched first.
            Admission::Refused { .. } | Admission::Local(_) | Admission::AwaitKeys => {
                return Plan::Defer
            }
        };
        // A body the policy reads is read whole, which is Pingora's path's to do when large.
        if body_len as u64 > BODY_LIMIT && admitted.wants_body {
            return Plan::Defer;
        }
        if let Some(body) = &dechunked {
            // Over the category's limit: Pingora's path counts it as it streams and refuses.
            if body.payload().len() as u64 > admitted.set.proxy.max_body {
                return Plan::Defer;
            }
        }
        let body = if admitted.wants_body {
            match dechunked
                .as_ref()
                .map_or(buf.get(head_len..head_len + body_len), |d| {
                    Some(d.payload())
                }) {
                Some(body) => Some(body),
                // The policy reads the body before a server is chosen: wait for all of it.
                None => return Plan::Partial,
            }
        } else {
            None
        };
        match enter(&admitted, &cx, &head.routing, body, false) {
            Entry::Go { .. } => {}
            Entry::Refused(_) | Entry::Defer => return Plan::Defer,
        }
        if let Some(host) = host {
            wire::header(&mut upstream_head, policy::FORWARDED_HOST.as_bytes(), host);
        }
        if let Some(inner) = &admitted.inner_session {
            wire::header(&mut upstream_head, answer::SESSION_FIELD.as_bytes(), inner);
        }
        for field in &admitted.set.access.upstream_headers {
            wire::header(
                &mut upstream_head,
                field.name.as_bytes(),
                field.value.as_bytes(),
            );
        }
        let head_start = request_line(&mut upstream_head, verb, &admitted.set.mcp_path, query);
        Plan::Take(Box::new(Exchange {
            admitted,
            head_start,
            head_len,
            body_len,
            dechunked,
            upstream_head,
            verb,
            method: crate::metrics::method_label(method_field),
            client_close,
            started,
            started_ms,
        }))
    }
}

/// Writes `{verb} {path}[?query] HTTP/1.1` into the room at the front of `head` (see
/// `LINE_ROOM`), or in place of it when it is longer; returns where the head now starts.
fn request_line(head: &mut Vec<u8>, verb: &str, path: &str, query: Option<&str>) -> usize {
    let (mark, query): (&[u8], &[u8]) = match query {
        Some(q) => (b"?", q.as_bytes()),
        None => (b"", b""),
    };
    let parts: [&[u8]; 6] = [
        verb.as_bytes(),
        b" ",
        path.as_bytes(),
        mark,
        query,
        b" HTTP/1.1\r\n",
    ];
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len > LINE_ROOM {
        head.splice(..LINE_ROOM, parts.concat());
        return 0;
    }
    let mut at = LINE_ROOM - len;
    let start = at;
    for part in parts {
        head[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    start
}

/// What a request's `Connection` field asks of this hop, when this engine can honour it: only
/// the persistence options (`keep-alive`, which every MCP SDK sends, and `close`): `Some(true)`
/// for close. Any other option (a field to strip at this hop, `upgrade`) is Pingora's path's.
fn persistence(value: &[u8]) -> Option<bool> {
    let mut close = false;
    for token in value.split(|&b| b == b',') {
        let token = token.trim_ascii();
        if token.eq_ignore_ascii_case(b"close") {
            close = true;
        } else if !token.eq_ignore_ascii_case(b"keep-alive") && !token.is_empty() {
            return None;
        }
    }
    Some(close)
}

/// What the fast path does with a request field, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    /// Passed on as it came.
    Other,
    Connection,
    ContentLength,
    TransferEncoding,
    Host,
    Session,
    Origin,
    McpMethod,
    McpName,
    Authorization,
    /// Set by this proxy from `Host`; a client's own is dropped.
    ForwardedHost,
    /// Asks for connection handling this engine does not do (`Expect`, `Upgrade`, `TE`,
    /// `Keep-Alive`, `Proxy-Connection`).
    NeedsPingora,
}

/// The field a name is, looked up among the names of its length only: most of a request's
/// fields are passed on, and a chain of fourteen comparisons per field was most of the plan's
/// own cost.
fn field(name: &str) -> Field {
    use Field::*;
    let named: &[(&str, Field)] = match name.len() {
        2 => &[("te", NeedsPingora)],
        4 => &[("host", Host)],
        6 => &[("origin", Origin), ("expect", NeedsPingora)],
        7 => &[("upgrade", NeedsPingora)],
        8 => &[("mcp-name", McpName)],
        10 => &[
            ("connection", Connection),
            ("mcp-method", McpMethod),
            ("keep-alive", NeedsPingora),
        ],
        13 => &[("authorization", Authorization)],
        14 => &[
            ("content-length", ContentLength),
            (answer::SESSION_FIELD, Session),
        ],
        16 => &[
            (policy::FORWARDED_HOST, ForwardedHost),
            ("proxy-connection", NeedsPingora),
        ],
        17 => &[("transfer-encoding", TransferEncoding)],
        _ => return Other,
    };
    named
        .iter()
        .find(|(n, _)| is(name, n))
        .map_or(Other, |&(_, kind)| kind)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_field_name_is_found_under_its_length_in_any_case() {
        use super::Field::*;
        let names = [
            ("Connection", Connection),
            ("content-length", ContentLength),
            ("Transfer-Encoding", TransferEncoding),
            ("HOST", Host),
            (crate::proxy::policy::answer::SESSION_FIELD, Session),
            ("Mcp-Session-Id", Session),
            ("origin", Origin),
            ("Mcp-Method", McpMethod),
            ("mcp-name", McpName),
            ("Authorization", Authorization),
            (crate::proxy::policy::FORWARDED_HOST, ForwardedHost),
            ("X-Forwarded-Host", ForwardedHost),
            ("Expect", NeedsPingora),
            ("upgrade", NeedsPingora),
            ("TE", NeedsPingora),
            ("Keep-Alive", NeedsPingora),
            ("Proxy-Connection", NeedsPingora),
            ("accept", Other),
            ("content-type", Other),
            ("mcp-protocol-version", Other),
            ("hostx", Other),
            ("connectiox", Other),
        ];
        for (name, kind) in names {
            assert_eq!(super::field(name), kind, "{name}");
        }
    }

    #[test]
    fn only_persistence_options_stay_on_the_fast_path() {
        assert_eq!(super::persistence(b"keep-alive"), Some(false));
        assert_eq!(super::persistence(b"Keep-Alive"), Some(false));
        assert_eq!(super::persistence(b"close"), Some(true));
        assert_eq!(super::persistence(b"keep-alive, close"), Some(true));
        assert_eq!(super::persistence(b" , keep-alive ,"), Some(false));
        assert_eq!(super::persistence(b"keep-alive, x-trace"), None);
        assert_eq!(super::persistence(b"upgrade"), None);
    }

    use super::*;

    #[test]
    fn the_request_line_fills_the_room_in_front_of_the_fields_or_replaces_it() {
        let mut head = vec![0u8; LINE_ROOM];
        head.extend_from_slice(b"a: 1\r\n");
        let start = request_line(&mut head, "POST", "/mcp", Some("x=1"));
        assert_eq!(&head[start..], b"POST /mcp?x=1 HTTP/1.1\r\na: 1\r\n");

        let long = "q".repeat(LINE_ROOM);
        let mut head = vec![0u8; LINE_ROOM];
        head.extend_from_slice(b"a: 1\r\n");
        let start = request_line(&mut head, "POST", "/mcp", Some(&long));
        assert_eq!(start, 0);
        assert_eq!(
            head,
            format!("POST /mcp?{long} HTTP/1.1\r\na: 1\r\n").into_bytes()
        );

        let mut head = vec![0u8; LINE_ROOM];
        let start = request_line(&mut head, "DELETE", "/mcp", None);
        assert_eq!(&head[start..], b"DELETE /mcp HTTP/1.1\r\n");
    }
}
