-- GET /health/live (wrk's static request; only the report is scripted).
dofile((os.getenv("BENCH_WRK_DIR") or "bench/wrk") .. "/report.lua")
