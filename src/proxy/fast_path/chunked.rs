//! Chunked bodies. An answer's: where it ends while its bytes are passed on untouched (the fast
//! path forwards a server's chunked answer, an SSE stream typically, as it arrives, and needs
//! to know when the answer is over, so the connection can carry the next request, and whether
//! the server broke the framing, so the client is not handed a truncated answer that looks
//! whole). A request's: read whole and decoded before a server is chosen, then sent on as one
//! chunk, as Pingora's path re-chunks what it read.

use super::scratch::Scratch;

/// Longest chunk-size line (with extensions) or trailer line accepted.
const MAX_LINE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex size; `digits` so far.
    Size {
        size: u64,
        digits: u8,
    },
    /// After the size: an extension up to CRLF.
    Extension {
        size: u64,
    },
    /// Expecting the LF of a size line.
    SizeLf {
        size: u64,
    },
    /// Chunk data still to pass.
    Data {
        left: u64,
    },
    /// The CR then LF after a chunk's data.
    DataCr,
    DataLf,
    /// Trailer section: at the start of a line.
    TrailerStart,
    /// Inside a trailer field line.
    TrailerLine,
    /// The LF ending a trailer line, or (when `last`) the whole body.
    TrailerLf {
        last: bool,
    },
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body")]
pub struct Malformed;

#[derive(Debug)]
pub struct ChunkedBody {
    state: State,
    line: usize,
    /// Chunk payload seen, without framing.
    data: u64,
}

impl Default for ChunkedBody {
    fn default() -> Self {
        Self {
            state: State::Size { size: 0, digits: 0 },
            line: 0,
            data: 0,
        }
    }
}

impl ChunkedBody {
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Payload bytes seen so far (what `max_response_body` counts).
    pub fn data_len(&self) -> u64 {
        self.data
    }

    /// Takes the next bytes of the stream; returns how many belong to this body (all of them
    /// unless the body ends inside `bytes`).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<usize, Malformed> {
        self.feed_with(bytes, |_| {})
    }

    /// As `feed`, handing each run of payload (the body without its framing) to `data`.
    pub fn feed_with(
        &mut self,
        bytes: &[u8],
        mut data: impl FnMut(&[u8]),
    ) -> Result<usize, Malformed> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match self.state {
                State::Done => return Ok(i),
                State::Data { left } => {
                    let take = (bytes.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                    data(&bytes[i..i + take]);
                    i += take;
                    self.data += take as u64;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data { left }
                    };
                    continue;
                }
                State::Size { size, digits } => {
                    if let Some(d) = (b as char).to_digit(16) {
                        if digits >= 15 {
                            return Err(Malformed);
                        }
                        self.state = State::Size {
                            size: size << 4 | u64::from(d),
                            digits: digits + 1,
                        };
                    } else if digits == 0 {
                        return Err(Malformed);
                    } else {
                        self.state = match b {
                            b'\r' => State::SizeLf { size },
                            b';' | b' ' | b'\t' => State::Extension { size },
                            _ => return Err(Malformed),
                        };
                    }
                    self.grow_line()?;
                }
                State::Extension { size } => {
                    if b == b'\r' {
                        self.state = State::SizeLf { size };
                    } else if b == b'\n' {
                        return Err(Malformed);
                    }
                    self.grow_line()?;
                }
                State::SizeLf { size } => {
                    if b != b'\n' {
                        return Err(Malformed);
                    }
                    self.line = 0;
                    self.state = if size == 0 {
                        State::TrailerStart
                    } else {
                        State::Data { left: size }
                    };
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(Malformed);
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(Malformed);
                    }
                    self.state = State::Size { size: 0, digits: 0 };
                }
                State::TrailerStart => {
                    self.state = if b == b'\r' {
                        State::TrailerLf { last: true }
                    } else {
                        State::TrailerLine
                    };
                    self.grow_line()?;
                }
                State::TrailerLine => {
                    if b == b'\r' {
                        self.state = State::TrailerLf { last: false };
                    }
                    self.grow_line()?;
                }
                State::TrailerLf { last } => {
                    if b != b'\n' {
                        return Err(Malformed);
                    }
                    self.line = 0;
                    self.state = if last {
                        State::Done
                    } else {
                        State::TrailerStart
                    };
                }
            }
            i += 1;
        }
        Ok(i)
    }

    fn grow_line(&mut self) -> Result<(), Malformed> {
        self.line += 1;
        if self.line > MAX_LINE {
            return Err(Malformed);
        }
        Ok(())
    }
}

/// Room left in front of a decoded request body for its one chunk-size line.
const SIZE_ROOM: usize = 18;

/// What the bytes after a chunked request's head hold.
#[derive(Debug)]
pub enum Request {
    /// The whole body, `raw_len` bytes of it in the client's framing, decoded into a
    /// [`Dechunked`].
    Whole { raw_len: usize, body: Dechunked },
    /// More is to come.
    Partial,
    /// Not for this engine: broken framing (the other engine's answer is the refusal), a
    /// trailer section or an extension on the last chunk (which this engine does not pass
    /// on), or a payload over the limit.
    Decline,
}

/// A request body decoded and framed again as one chunk and the last chunk (an empty one as no
/// bytes at all).
#[derive(Debug)]
pub struct Dechunked {
    buf: Scratch,
    /// Where the size line starts, and where the payload ends.
    start: usize,
    end: usize,
}

impl Dechunked {
    /// The body as the server gets it.
    pub fn framed(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// The payload, for the policy to read.
    pub fn payload(&self) -> &[u8] {
        &self.buf[SIZE_ROOM..self.end]
    }
}

/// Decodes the chunked body at the front of `bytes`, of at most `limit` payload bytes, into
/// `buf` (emptied first).
pub fn request(bytes: &[u8], limit: usize, mut buf: Scratch) -> Request {
    buf.clear();
    buf.resize(SIZE_ROOM, 0);
    let mut body = ChunkedBody::default();
    let mut over = false;
    let used = body.feed_with(bytes, |run| {
        over |= buf.len() - SIZE_ROOM + run.len() > limit;
        if !over {
            buf.extend_from_slice(run);
        }
    });
    let raw_len = match used {
        Ok(_) if over => return Request::Decline,
        Ok(n) if body.done() => n,
        // Tiny chunks cost more framing than payload: a body whose framing alone is longer
        // than this is not one to hold bytes for.
        Ok(n) if n <= 4 * limit + 4096 => return Request::Partial,
        Ok(_) | Err(Malformed) => return Request::Decline,
    };
    let raw = &bytes[..raw_len];
    if !(raw == b"0\r\n\r\n" || raw.ends_with(b"\r\n0\r\n\r\n")) {
        return Request::Decline;
    }
    let end = buf.len();
    let len = end - SIZE_ROOM;
    let mut start = SIZE_ROOM;
    // An empty body is sent as none at all (no `Transfer-Encoding` either), as Pingora's path
    // sends it.
    if len > 0 {
        buf.extend_from_slice(b"\r\n0\r\n\r\n");
        // The size line, hex digits then CRLF, written backwards into the room.
        start -= 2;
        buf[start..SIZE_ROOM].copy_from_slice(b"\r\n");
        let mut n = len;
        while n > 0 {
            start -= 1;
            buf[start] = b"0123456789abcdef"[n & 0xf];
            n >>= 4;
        }
    }
    Request::Whole {
        raw_len,
        body: Dechunked { buf, start, end },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(body: &[u8]) -> Result<(usize, bool, u64), Malformed> {
        let mut c = ChunkedBody::default();
        let n = c.feed(body)?;
        Ok((n, c.done(), c.data_len()))
    }

    #[test]
    fn finds_the_end_of_a_body_fed_in_one_piece_or_byte_by_byte() {
        let body = b"5\r\nhello\r\na;ext=1\r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        assert_eq!(whole(body), Ok((body.len() - 4, true, 15)));
        let mut c = ChunkedBody::default();
        let mut used = 0;
        for b in body.iter() {
            used += c.feed(std::slice::from_ref(b)).expect("well-formed");
        }
        assert_eq!(used, body.len() - 4);
        assert!(c.done());
    }

    #[test]
    fn a_body_split_anywhere_in_two_reads_as_it_does_whole() {
        let body = b"19\r\nevent: message\ndata: {}\n\n\r\n5;x\r\nhello\r\n0\r\n\r\nNEXT";
        let read = |pieces: &[&[u8]]| {
            let mut c = ChunkedBody::default();
            let mut payload = Vec::new();
            let mut used = 0;
            for piece in pieces {
                used += c.feed_with(piece, |d| payload.extend_from_slice(d))?;
            }
            Ok::<_, Malformed>((used, c.done(), c.data_len(), payload))
        };
        let one = read(&[body]).expect("well-formed");
        assert_eq!((one.0, one.1, one.2), (body.len() - 4, true, 30));
        for at in 0..=body.len() {
            assert_eq!(
                read(&[&body[..at], &body[at..]]),
                Ok(one.clone()),
                "split at {at}"
            );
        }
        let broken = b"19\r\nevent: message\ndata: {}\n\n\rX";
        for at in 0..=broken.len() {
            assert_eq!(
                read(&[&broken[..at], &broken[at..]]),
                Err(Malformed),
                "split at {at}"
            );
        }
    }

    #[test]
    fn an_unfinished_body_is_not_done() {
        assert_eq!(whole(b"5\r\nhel"), Ok((6, false, 3)));
        assert_eq!(whole(b"0\r\n"), Ok((3, false, 0)));
        assert_eq!(whole(b"0\r\n\r\n"), Ok((5, true, 0)));
    }

    fn decoded(bytes: &[u8], limit: usize) -> Option<(usize, String, String)> {
        match request(bytes, limit, Scratch::take(0)) {
            Request::Whole { raw_len, body } => Some((
                raw_len,
                String::from_utf8_lossy(body.framed()).into_owned(),
                String::from_utf8_lossy(body.payload()).into_owned(),
            )),
            _ => None,
        }
    }

    #[test]
    fn a_request_body_is_decoded_and_framed_as_one_chunk() {
        let body = b"5\r\nhello\r\na;ext=1\r\n0123456789\r\n0\r\n\r\nNEXT";
        assert_eq!(
            decoded(body, 64),
            Some((
                body.len() - 4,
                "f\r\nhello0123456789\r\n0\r\n\r\n".into(),
                "hello0123456789".into()
            ))
        );
        assert_eq!(
            decoded(b"0\r\n\r\n", 64),
            Some((5, String::new(), String::new()))
        );
        let big = [b"1000\r\n".as_slice(), &[b'x'; 0x1000], b"\r\n0\r\n\r\n"].concat();
        let (_, framed, payload) = decoded(&big, 0x1000).expect("whole");
        assert!(framed.starts_with("1000\r\nxxx"));
        assert_eq!(payload.len(), 0x1000);
        // Over the limit, with a trailer, an extension on the last chunk, broken: declined.
        assert!(matches!(
            request(&big, 0xfff, Scratch::take(0)),
            Request::Decline
        ));
        for declined in [
            &b"5\r\nhello\r\n0\r\nx-t: 1\r\n\r\n"[..],
            b"5\r\nhello\r\n0;x\r\n\r\n",
            b"5\r\nhelloXX",
        ] {
            assert!(matches!(
                request(declined, 64, Scratch::take(0)),
                Request::Decline
            ));
        }
        assert!(matches!(
            request(b"5\r\nhel", 64, Scratch::take(0)),
            Request::Partial
        ));
        // Endless framing around no payload is not waited for.
        let tiny = b"1;aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\nx\r\n".repeat(4096);
        assert!(matches!(
            request(&tiny, 64 * 1024, Scratch::take(0)),
            Request::Partial
        ));
        assert!(matches!(
            request(&tiny, 8192, Scratch::take(0)),
            Request::Decline
        ));
    }

    #[test]
    fn broken_framing_is_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\r\nhelloXX",
            b"5\nhello",
            b"1234567890abcdef0\r\n",
            b"5;ext\n",
            b"0\r\n\rX",
        ] {
            assert_eq!(whole(bad).map(|_| ()), Err(Malformed), "{bad:?}");
        }
        let long = [b"1;".as_slice(), &[b'a'; MAX_LINE]].concat();
        assert_eq!(whole(&long).map(|_| ()), Err(Malformed));
    }
}
