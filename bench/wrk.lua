-- wrk script for bench/run. MODE selects the request: "get" reads one of
-- KEYS seeded secrets ("vault": the same through Vault's KV v2 API), "batch" reads 100 of them in one POST /batch/get,
-- "put" writes a fresh key each time, "login" exchanges LOGIN_JWT for a
-- token (POST /auth/login/jwt, role "bench"), "hello" hits the baseline. The done() hook prints one JSON line with the figures.
local mode = os.getenv("MODE") or "get"
local api_key = os.getenv("API_KEY") or ""
local keys = tonumber(os.getenv("KEYS") or "1000")
local token = os.getenv("TOKEN")
local counter = 0
-- thread_id is a global: setup() sets it in each thread's Lua state (a
-- local here would hide it, and every thread would be thread 0).

local threads = {}
function setup(thread)
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end

local function auth_headers(h)
  if token and token ~= "" then
    h["Authorization"] = "Bearer " .. token
  else
    h["X-Api-Key"] = api_key
  end
  return h
end

-- Requests are built once per thread in init() and request() only picks
-- the next one: building a request per call is what wrk's SCRIPTING notes
-- call expensive, and on a 2-core machine the load generator's CPU is taken
-- from the server under test. PUT bodies must differ (a fresh key each
-- time), so only their fixed parts are built ahead.
local prepared = {}
local put_head

function init(args)
  thread_id = thread_id or 0
  if mode == "hello" then
    prepared[0] = wrk.format("GET", "/hello")
  elseif mode == "get" then
    for i = 0, keys - 1 do
      prepared[i] = wrk.format("GET", "/secrets/bench/key-" .. i, auth_headers({}))
    end
  elseif mode == "vault" then
    -- The same secrets through Vault's KV v2 API, the API key as the token.
    for i = 0, keys - 1 do
      prepared[i] = wrk.format("GET", "/v1/secret/data/bench/key-" .. i, {["X-Vault-Token"] = api_key})
    end
  elseif mode == "login" then
    local body = '{"tenant":"bench","role":"bench","jwt":"' .. os.getenv("LOGIN_JWT") .. '"}'
    prepared[0] = wrk.format("POST", "/auth/login/jwt", {["Content-Type"] = "application/json"}, body)
  elseif mode == "batch" then
    -- Ten batches of 100 consecutive keys, from different places.
    for b = 0, 9 do
      local names = {}
      for i = 0, 99 do
        table.insert(names, '"bench/key-' .. ((b * 100 + i * 7) % keys) .. '"')
      end
      local body = '{"keys":[' .. table.concat(names, ",") .. ']}'
      prepared[b] = wrk.format("POST", "/batch/get",
        auth_headers({["Content-Type"] = "application/json"}), body)
    end
  else
    -- wrk.format's request, cut before the Content-Length it would add.
    local headers = auth_headers({["Content-Type"] = "application/json"})
    local lines = {"PUT /secrets HTTP/1.1", "Host: " .. wrk.headers["Host"]}
    for name, value in pairs(headers) do
      table.insert(lines, name .. ": " .. value)
    end
    put_head = table.concat(lines, "\r\n") .. "\r\nContent-Length: "
  end
end

function request()
  counter = counter + 1
  if mode == "hello" or mode == "login" then
    return prepared[0]
  elseif mode == "get" or mode == "vault" then
    return prepared[(counter * 7919 + thread_id * 104729) % keys]
  elseif mode == "batch" then
    return prepared[(counter + thread_id) % 10]
  else
    local body = string.format('{"key":"bench/put-%d-%d","value":"value-%d-0123456789abcdef0123456789abcdef"}', thread_id, counter, counter)
    return put_head .. #body .. "\r\n\r\n" .. body
  end
end

function done(summary, latency, requests)
  local non2xx = summary.errors.status
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"rps":%.1f,"p50_us":%d,"p99_us":%d,"non2xx":%d,"socket_errors":%d}\n',
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), non2xx,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
