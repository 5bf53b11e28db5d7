-- GET /v1/session with a bearer token picked at random per request from the
-- seeded tokens.  Usage: wrk ... -s session.lua URL -- TOKENS_FILE
-- BENCH_SESSION_PATH (default /v1/session) serves the comparison targets.
dofile((os.getenv("BENCH_WRK_DIR") or "bench/wrk") .. "/report.lua")

local reqs = {}

function init(args)
   seed_random()
   local path = args[1] or error("session.lua needs the tokens file as its argument")
   local f = assert(io.open(path, "r"))
   for token in f:lines() do
      if #token > 0 then
         reqs[#reqs + 1] = wrk.format("GET", os.getenv("BENCH_SESSION_PATH") or "/v1/session", { ["Authorization"] = "Bearer " .. token })
      end
   end
   f:close()
   if #reqs == 0 then error("no tokens in " .. path) end
end

function response(status, headers, body)
   count_status(status)
end

function request()
   return reqs[math.random(#reqs)]
end
