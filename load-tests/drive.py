#!/usr/bin/env python3
"""Load client for the request kinds oha cannot send: chunked uploads, the 2025-11-25 session
life (initialize, notifications/initialized, the GET stream, calls, DELETE) and progress
notifications streamed in a call's answer. Plain asyncio sockets, HTTP/1.1 kept alive, CONC
clients for SECS seconds.

Prints one line as oha_summary does: "units_per_s p50_ms p99_ms ok non2xx errors", where a unit
is a request (chunked, session) or a delivered event (events), and the latencies are of
requests (events: of whole answers).

Usage: drive.py KIND URL SECS CONC   (KIND: chunked | session | events)
"""

import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

CALL = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "hello"}}}
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "drive", "version": "1"}}}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
# The 100 progress notifications of the built-in server's countdown, then its answer.
COUNTDOWN = {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
             "params": {"name": "countdown", "arguments": {"n": 100, "interval_ms": 0},
                        "_meta": {"progressToken": "p"}}}


def stateless(call):
    """A 2026-07-28 request: the body with its `_meta` fields, and the routing fields."""
    call = json.loads(json.dumps(call))
    call["params"].setdefault("_meta", {}).update({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "drive", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {}})
    fields = (f"mcp-protocol-version: 2026-07-28\r\nmcp-method: {call['method']}\r\n"
              f"mcp-name: {call['params']['name']}\r\n")
    return fields, json.dumps(call).encode()
# What the SDKs send beside the MCP fields.
COMMON = ("accept: application/json, text/event-stream\r\n"
          "connection: keep-alive\r\nuser-agent: python-httpx/0.28.1\r\n")


class Conn:
    def __init__(self, host, port):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def open(self):
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self):
        if self.writer:
            self.writer.close()
            self.writer = None

    async def head(self):
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                fields[k.strip().lower()] = v.strip()
        return status, fields

    async def body(self, fields):
        if "content-length" in fields:
            return await self.reader.readexactly(int(fields["content-length"]))
        if fields.get("transfer-encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    return bytes(out)
                out += await self.reader.readexactly(size)
                await self.reader.readexactly(2)
        # Framed by the close: this connection is done.
        payload = await self.reader.read()
        self.close()
        return payload

    async def request(self, method, path, extra="", body=None, chunked=False):
        """Sends one request and reads its whole answer: (status, fields, body)."""
        if self.writer is None:
            await self.open()
        head = f"{method} {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n{COMMON}{extra}"
        if body is None:
            data = (head + "\r\n").encode()
        elif chunked:
            half = len(body) // 2
            parts = [body[:half], body[half:]]
            data = (head + "content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n").encode()
            data += b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
        else:
            data = (head + f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body
        self.writer.write(data)
        await self.writer.drain()
        while True:
            status, fields = await self.head()
            if status >= 200:
                break
        payload = await self.body(fields)
        if fields.get("connection", "").lower() == "close":
            self.close()
        return status, fields, payload


class Tally:
    def __init__(self):
        self.latencies, self.ok, self.bad, self.errors, self.units = [], 0, 0, 0, 0

    def note(self, started, status, units=1):
        self.latencies.append(time.monotonic() - started)
        if 200 <= status < 300:
            self.ok += 1
            self.units += units
        else:
            self.bad += 1


async def timed(tally, conn, *args, units=1, **kw):
    started = time.monotonic()
    status, fields, payload = await conn.request(*args, **kw)
    tally.note(started, status, units(payload) if callable(units) else units)
    return status, fields, payload


async def chunked_client(url, deadline, tally):
    conn = Conn(url.hostname, url.port)
    fields, body = stateless(CALL)
    while time.monotonic() < deadline:
        await timed(tally, conn, "POST", url.path, fields, body, chunked=True)
    conn.close()


async def session_client(url, deadline, tally):
    conn = Conn(url.hostname, url.port)
    version = "mcp-protocol-version: 2025-11-25\r\n"
    while time.monotonic() < deadline:
        status, fields, _ = await timed(tally, conn, "POST", url.path, "", json.dumps(INIT).encode())
        sid = fields.get("mcp-session-id")
        if status != 200 or not sid:
            continue
        session = f"{version}mcp-session-id: {sid}\r\n"
        await timed(tally, conn, "POST", url.path, session, json.dumps(INITIALIZED).encode())
        # The SDKs open the GET stream beside the calls, without waiting for it.
        stream = Conn(url.hostname, url.port)
        await stream.open()
        opened = time.monotonic()
        stream.writer.write(f"GET {url.path} HTTP/1.1\r\nhost: {url.hostname}:{url.port}\r\n"
                            f"{COMMON}{session}\r\n".encode())
        head = asyncio.ensure_future(stream.head())
        for _ in range(10):
            await timed(tally, conn, "POST", url.path, session, json.dumps(CALL).encode())
        try:
            status, _ = await asyncio.wait_for(head, 5)
            tally.note(opened, status)
        except (asyncio.TimeoutError, OSError, asyncio.IncompleteReadError):
            tally.errors += 1
        await timed(tally, conn, "DELETE", url.path, session)
        stream.close()
    conn.close()


async def events_client(url, deadline, tally):
    conn = Conn(url.hostname, url.port)
    fields, body = stateless(COUNTDOWN)
    events = lambda payload: payload.count(b"\ndata:") + payload.startswith(b"data:")
    while time.monotonic() < deadline:
        await timed(tally, conn, "POST", url.path, fields, body, units=events)
    conn.close()


async def main(kind, url, secs, conc):
    url = urlsplit(url)
    client = {"chunked": chunked_client, "session": session_client, "events": events_client}[kind]
    tally = Tally()
    started = time.monotonic()
    deadline = started + secs

    async def guarded():
        while time.monotonic() < deadline:
            try:
                await client(url, deadline, tally)
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                tally.errors += 1

    await asyncio.gather(*(guarded() for _ in range(conc)))
    elapsed = time.monotonic() - started
    lat = sorted(tally.latencies) or [0.0]
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000
    print(f"{tally.units / elapsed:.0f} {pct(0.5):.2f} {pct(0.99):.2f} {tally.units} {tally.bad} {tally.errors}")


if __name__ == "__main__":
    kind, url, secs, conc = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    asyncio.run(main(kind, url, secs, conc))
