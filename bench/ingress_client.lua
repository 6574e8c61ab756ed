-- wrk script for bench/ingress.py: sends each pre-signed request of a file once over wrk's keep-alive
-- connections, counts the answers by status, and when every request of its share is answered a thread
-- prints "answered" and stops (wrk's main thread then waits for a SIGINT from bench/ingress.py). done()
-- prints one JSON line: statuses, the time from the first thread's end of init() to the last answer,
-- and wrk's latency percentiles over every thread.
-- args: <requests file> <lengths file>
-- WRK_PORTS (environment, optional): one port per wrk thread (-t), all on 127.0.0.1: thread i sends
-- every i-th request of the file to its own port over its share of the connections (replicas behind a
-- Service, each connection to one of them), and prints "answered" when its share is answered.
local ffi = require("ffi")
ffi.cdef[[
  typedef struct { long tv_sec; long tv_nsec; } timespec_t;
  int clock_gettime(int clock, timespec_t *now);
]]
local now_ts = ffi.new("timespec_t")
local function now_us()
  ffi.C.clock_gettime(1, now_ts)  -- CLOCK_MONOTONIC
  return tonumber(now_ts.tv_sec) * 1000000 + tonumber(now_ts.tv_nsec) / 1000
end

local requests, next_index, answered, total = {}, 1, 0, 0
statuses, started_us, finished_us = {}, 0, 0
part, parts = 0, 1  -- which share of the file this thread sends (set by setup() in the thread's state)
local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
  local ports = {}
  for port in string.gmatch(os.getenv("WRK_PORTS") or "", "%d+") do ports[#ports + 1] = port end
  if #ports > 0 then
    thread.addr = wrk.lookup("127.0.0.1", ports[(#threads - 1) % #ports + 1])[1]
    thread:set("part", #threads - 1)
    thread:set("parts", #ports)
  end
end

function init(args)
  local data = assert(io.open(args[1], "rb")):read("*a")
  local offset, index = 1, 0
  for length in assert(io.open(args[2], "r")):lines() do
    local n = tonumber(length)
    if index % parts == part then requests[#requests + 1] = data:sub(offset, offset + n - 1) end
    offset, index = offset + n, index + 1
  end
  total = #requests
  started_us = now_us()
end

-- wrk calls request() once right after init() to check the script (script_verify_request) and throws
-- that request away; the connections call delay() before each request they send, so a request() before
-- the first delay() must not use a request up.
local sending = false

function delay()
  sending = true
  if next_index > total then return 3600000 end  -- every request sent: the connection waits
  return 0
end

function request()
  if not sending then return requests[1] end
  local r = requests[next_index]
  next_index = next_index + 1
  return r
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  answered = answered + 1
  if answered == total then
    finished_us = now_us()
    io.stdout:write("answered\n")
    io.stdout:flush()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local counts, parts, started, finished = {}, {}, math.huge, 0
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      counts[status] = (counts[status] or 0) + count
    end
    started = math.min(started, thread:get("started_us"))
    finished = math.max(finished, thread:get("finished_us"))
  end
  for status, count in pairs(counts) do
    parts[#parts + 1] = string.format('"%d": %d', status, count)
  end
  io.write(string.format('{"statuses": {%s}, "elapsed_us": %d, "p50_us": %d, "p99_us": %d}\n',
    table.concat(parts, ", "), finished - started, latency:percentile(50), latency:percentile(99)))
end
