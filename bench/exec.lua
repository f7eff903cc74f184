-- wrk script: POST /v1/boxes/{box}/execs {"cmd":["true"]}, round-robin over the boxes named in
-- $BOXES (comma-separated ids); every reply must be 200 with exit code 0.
local boxes = {}
for id in string.gmatch(os.getenv("BOXES") or "", "[^,]+") do boxes[#boxes + 1] = id end
local n = 0
local body = '{"cmd":["true"]}'
local headers = { ["Content-Type"] = "application/json" }
local key = os.getenv("UPSTREAM_API_KEY")
if key and key ~= "" then headers["Authorization"] = "Bearer " .. key end

setup = function(thread)
  thread:set("offset", math.random(1, 1000))
end

request = function()
  n = n + 1
  local id = boxes[((n + (offset or 0)) % #boxes) + 1]
  return wrk.format("POST", "/v1/boxes/" .. id .. "/execs", headers, body)
end

bad = 0
response = function(status, hdrs, resp)
  if status ~= 200 or not string.find(resp, '"exit_code":0', 1, true) then bad = bad + 1 end
end

done = function(summary, latency, requests)
  io.write(string.format(
    'RESULT {"requests":%d,"seconds":%.3f,"rps":%.1f,"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,"errors":%d}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status +
      summary.errors.timeout))
end
