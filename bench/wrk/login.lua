-- POST /v1/login for a random seeded user (bench<N>@example.com, all with the
-- same password).  Usage: wrk ... -s login.lua URL -- USERS PASSWORD
-- BENCH_LOGIN_PATH (default /v1/login) serves the comparison targets.
-- Counts responses per status (200, 503 when hashing is saturated, ...).
dofile((os.getenv("BENCH_WRK_DIR") or "bench/wrk") .. "/report.lua")

local users, password

function init(args)
   seed_random()
   users = tonumber(args[1]) or error("login.lua needs the user count as its first argument")
   password = args[2] or error("login.lua needs the password as its second argument")
end

function request()
   local body = string.format('{"email":"bench%d@example.com","password":"%s"}',
      math.random(0, users - 1), password)
   return wrk.format("POST", os.getenv("BENCH_LOGIN_PATH") or "/v1/login", { ["Content-Type"] = "application/json" }, body)
end

function response(status, headers, body)
   count_status(status)
end
