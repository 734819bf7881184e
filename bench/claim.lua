-- wrk script for `bun run bench` (bench/run.ts drives it; see docs/benchmarks.md).
--
--   wrk -t2 -c64 -d10s -s bench/claim.lua http://127.0.0.1:PORT/api/coupons/claim COUPON_NAME [keys] [COUNT] [tokens=PREFIX]
--   wrk -t2 -c256 -d10s -s bench/claim.lua http://127.0.0.1:PORT/health/live
--
-- With a coupon name it POSTs one claim per request, each with a distinct user_id ("t<thread>-<n>"),
-- and with "keys" also a distinct Idempotency-Key ("<coupon>-t<thread>-<n>"); without one it GETs the URL.
-- With a COUNT the name is a prefix: the claims go to coupons PREFIX_0 .. PREFIX_<COUNT-1>, a thread's
-- n-th request to PREFIX_<n mod COUNT>. It counts answers per status in every thread (4xx/5xx keyed with
-- the problem code, e.g. "409 SOLD_OUT"), and done() prints one line "BENCH_RESULT {json}".
-- With tokens=PREFIX each claim carries "Authorization: Bearer <its user's JWT>": thread n reads
-- PREFIX-t<n>.txt (bench/jwt.ts mints it), line i the token of user "t<n>-<i>".

local threads = {}

-- Main state, once per thread before it starts: number the thread and keep it for done().
function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_id", #threads)
end

-- Thread state: read the arguments (args[0] is the URL) and reset this thread's counters.
function init(args)
  coupon = args[1]
  keyed = false
  tokens = nil
  coupons = { coupon }
  for i = 2, #args do
    if args[i] == "keys" then
      keyed = true
    elseif args[i]:sub(1, 7) == "tokens=" then
      -- Read once, before the run: a request only picks its line.
      tokens = {}
      for line in io.lines(string.format("%s-t%d.txt", args[i]:sub(8), thread_id)) do
        tokens[#tokens + 1] = "Bearer " .. line
      end
    elseif tonumber(args[i]) then
      -- Named once here, so a request only picks one: no string building per request for the name.
      coupons = {}
      for k = 0, tonumber(args[i]) - 1 do
        coupons[k + 1] = string.format("%s_%d", coupon, k)
      end
    end
  end
  sent = 0
  statuses = {}
  if coupon then
    claim_headers = { ["Content-Type"] = "application/json" }
  else
    static_request = wrk.format("GET")
  end
end

-- Thread state, once per request: a claim by a user id never used before, or the plain GET.
function request()
  sent = sent + 1
  if not coupon then
    return static_request
  end
  local name = coupons[sent % #coupons + 1]
  local user = sent
  if tokens then
    -- Past the last token users repeat (ALREADY_CLAIMED, which the run reports): mint more.
    user = (sent - 1) % #tokens + 1
    claim_headers["Authorization"] = tokens[user]
  end
  local body = string.format('{"user_id":"t%d-%d","coupon_name":"%s"}', thread_id, user, name)
  if keyed then
    claim_headers["Idempotency-Key"] = string.format("%s-t%d-%d", name, thread_id, sent)
  end
  return wrk.format("POST", nil, claim_headers, body)
end

-- Thread state, once per answer: count it under its status (and problem code for errors).
function response(status, headers, body)
  local key = tostring(status)
  if status >= 400 then
    key = key .. " " .. (body:match('"code":"([%w_]+)"') or "?")
  end
  statuses[key] = (statuses[key] or 0) + 1
end

-- Quotes a status key for JSON (keys are digits, letters, '_', ' ' and '?').
local function quote(s)
  return '"' .. s .. '"'
end

-- Main state, after the run: sum every thread's counters and print the machine-readable line.
-- "unanswered" (sent - answered) counts requests in flight when wrk stopped or lost on a socket error,
-- plus the one request() call wrk makes in the first thread to check the script: an upper bound.
function done(summary, latency, requests)
  local totals, sent_total, answered = {}, 0, 0
  for _, thread in ipairs(threads) do
    sent_total = sent_total + thread:get("sent")
    for key, count in pairs(thread:get("statuses")) do
      totals[key] = (totals[key] or 0) + count
      answered = answered + count
    end
  end
  local parts = {}
  for key, count in pairs(totals) do
    table.insert(parts, quote(key) .. ":" .. string.format("%d", count))
  end
  local e = summary.errors
  print(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,'
      .. '"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},'
      .. '"sent":%d,"unanswered":%d,"statuses":{%s}}',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.timeout, sent_total, sent_total - answered, table.concat(parts, ",")))
end
