-- Refresh grants that rotate: each request presents the current refresh token of a family that no
-- other request is using, and the family's new token from the answer goes back to the thread's
-- pool. AUTH (the client's Authorization header) is prepended by bench/run.py; the arguments are
-- the number of wrk threads, then the tokens (dealt out to the threads in turn). At the end the
-- tokens not in flight are printed on a "TOKENS" line, for the next run, and the answers that
-- were not a 200 with a refresh token on a "FAILED" line.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

pool = {}
failed = 0

function init(args)
  local count = tonumber(args[1])
  for i = 2, #args do
    if (i - 2) % count == id - 1 then table.insert(pool, args[i]) end
  end
end

local verified = false

function request()
  -- wrk calls request() once on the first thread before the run, to check the script, and
  -- never sends that request: it must not take a token.
  if id == 1 and not verified then
    verified = true
    return wrk.format("POST", nil, {["Content-Type"] = "application/x-www-form-urlencoded"}, "grant_type=refresh_token")
  end
  -- An empty pool (never with more tokens than connections) sends a token that fails: counted
  -- as non-2xx, which the harness refuses.
  local token = table.remove(pool) or "none.none"
  return wrk.format("POST", nil, {["Content-Type"] = "application/x-www-form-urlencoded", ["Authorization"] = AUTH},
    "grant_type=refresh_token&refresh_token=" .. token)
end

function response(status, headers, body)
  local token = string.match(body, '"refresh_token":"([^"]+)"')
  if status == 200 and token then table.insert(pool, token) else failed = failed + 1 end
end

function done(summary, latency, requests)
  local left, failures = {}, 0
  for _, thread in ipairs(threads) do
    for _, token in ipairs(thread:get("pool")) do table.insert(left, token) end
    failures = failures + thread:get("failed")
  end
  io.write("FAILED " .. failures .. "\n")
  io.write("TOKENS " .. table.concat(left, " ") .. "\n")
end
