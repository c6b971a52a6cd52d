-- wrk script: MCP 2025-11-25 sessions. Each wrk thread opens a session (initialize, then
-- notifications/initialized) and sends `tools/call echo` in it; the proxy must route every call
-- to the server that minted the session. Non-200 answers are counted and printed.
local sid = nil
local initialized = false
local bad = 0
local calls = 0

local init_body = '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25",' ..
  '"capabilities":{},"clientInfo":{"name":"wrk","version":"1"}}}'
local notify_body = '{"jsonrpc":"2.0","method":"notifications/initialized"}'
local call_body = '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"}}}'

local base = {
  ["Content-Type"] = "application/json",
  ["Accept"] = "application/json, text/event-stream",
}

local function with(extra)
  local h = {}
  for k, v in pairs(base) do h[k] = v end
  for k, v in pairs(extra) do h[k] = v end
  return h
end

function request()
  if sid == nil then
    return wrk.format("POST", nil, base, init_body)
  end
  if not initialized then
    initialized = true
    return wrk.format("POST", nil, with({["Mcp-Session-Id"] = sid}), notify_body)
  end
  return wrk.format("POST", nil,
    with({["Mcp-Session-Id"] = sid, ["Mcp-Protocol-Version"] = "2025-11-25"}), call_body)
end

function response(status, headers, body)
  if sid == nil and status == 200 then
    sid = headers["mcp-session-id"] or headers["Mcp-Session-Id"]
    return
  end
  calls = calls + 1
  if status ~= 200 and status ~= 202 then bad = bad + 1 end
end

function done(summary, latency, requests)
  io.write(string.format("session calls: non-2xx answers (last thread): %d\n", bad))
end
