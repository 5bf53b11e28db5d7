-- Shared by the bench/wrk/*.lua scripts (loaded with dofile): keeps every
-- thread, and prints one machine-readable line from done() that
-- bench/run.sh parses:
--   BENCH requests=N duration_s=S rps=R p50_ms=A p99_ms=B non2xx=C socket_errors=E [status_XXX=K ...]
-- non2xx counts responses with a status of 400 or more (wrk's own count).
-- Scripts that define response() also report per-status counts; they keep
-- them in the per-thread global `statuses` (see count_status).

threads = {}
local next_id = 0

function setup(thread)
   next_id = next_id + 1
   thread:set("id", next_id)
   table.insert(threads, thread)
end

-- Per-thread status counts (only for scripts that define response()).
statuses = {}
function count_status(status)
   statuses[status] = (statuses[status] or 0) + 1
end

function seed_random()
   -- `id` is set by setup() before init() runs in the thread.
   math.randomseed(os.time() * 1000 + (id or 0) * 7919 + math.floor((os.clock() * 1e6) % 100000))
   for _ = 1, 10 do math.random() end
end

function done(summary, latency, requests)
   local seconds = summary.duration / 1e6
   local e = summary.errors
   local line = string.format(
      "BENCH requests=%d duration_s=%.3f rps=%.2f p50_ms=%.3f p99_ms=%.3f non2xx=%d socket_errors=%d",
      summary.requests, seconds, summary.requests / seconds,
      latency:percentile(50) / 1000, latency:percentile(99) / 1000,
      e.status, e.connect + e.read + e.write + e.timeout)
   local totals = {}
   for _, thread in ipairs(threads) do
      local s = thread:get("statuses")
      if s then
         for code, n in pairs(s) do totals[code] = (totals[code] or 0) + n end
      end
   end
   local codes = {}
   for code in pairs(totals) do table.insert(codes, code) end
   table.sort(codes)
   for _, code in ipairs(codes) do
      line = line .. string.format(" status_%d=%d", code, totals[code])
   end
   io.write(line .. "\n")
end
