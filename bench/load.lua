-- wrk script for the HTTP accept benchmark (bench/latency.py).
-- Run with one thread (-t1): each connection posts a new message per request,
-- and the thread stops once it has had the number of answers given as the first
-- argument (the second is the API token). Every answer must be a 202.
-- At the end one line of JSON: counts, the percentiles (µs), and the span from
-- the first request sent to the last answer received (ns).
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } vg_timespec;
int clock_gettime(int clock, vg_timespec *ts);
]]
local ts = ffi.new("vg_timespec")
local function now_ns()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1e9 + tonumber(ts.tv_nsec)
end

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  share = tonumber(args[1])
  token = args[2]
  sent, answered, wrong, first_ns, last_ns = 0, 0, 0, 0, 0
end

function request()
  sent = sent + 1
  if first_ns == 0 then first_ns = now_ns() end
  local body = string.format(
    '{"agent":"bench","text":"load %d-%d","subject":"s%d"}', id, sent, sent % 50)
  return wrk.format("POST", "/api/messages", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }, body)
end

function response(status, headers, body)
  answered = answered + 1
  if status ~= 202 then wrong = wrong + 1 end
  last_ns = now_ns()
  if answered == share then
    io.write("share answered\n")  -- bench/latency.py then ends the run (SIGINT)
    io.flush()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local first, last, wrongs = math.huge, 0, 0
  for _, t in ipairs(threads) do
    first = math.min(first, t:get("first_ns"))
    last = math.max(last, t:get("last_ns"))
    wrongs = wrongs + t:get("wrong")
  end
  local e = summary.errors
  io.write(string.format(
    '{"answered":%d,"span_ns":%.0f,"p50_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"not_202":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d}\n',
    summary.requests, last - first, latency:percentile(50), latency:percentile(99),
    latency.max, wrongs, e.connect, e.read, e.write, e.timeout))
end
