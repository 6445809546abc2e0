#!/usr/bin/env bash
# HTTP API throughput with wrk (Debian package `wrk`): cached point gets
# through GET /api/v1/dbs/test/tables/bench/docs/{id} and through
# POST /api/v1/query, against a release server on a fresh data directory.
#
#   cargo build --release -p photondb
#   perf/http/run.sh [seconds=10] [connections=64] [records=10000]
#
# The same workload over the driver port is `target/release/driver-bench`
# ("get, 1 connection, 64 in flight").
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-10}"
connections="${2:-64}"
records="${3:-10000}"
binary="${PHOTONDB_BIN:-target/release/photondb}"
command -v wrk >/dev/null || { echo "wrk is missing (apt-get install wrk)"; exit 1; }

scratch="$(mktemp -d)"
"$binary" serve --data-dir "$scratch/data" --http-port 0 --driver-port 0 2>"$scratch/server.log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$scratch"' EXIT
until grep -q "listening for RethinkDB drivers" "$scratch/server.log"; do sleep 0.1; done
http_port="$(sed -n 's/.*listening for HTTP http_address=[^ ]*:\([0-9]*\).*/\1/p' "$scratch/server.log")"
base="http://127.0.0.1:$http_port"

curl -sf -X POST -H 'Content-Type: application/json' -d '{"name":"bench"}' "$base/api/v1/dbs/test/tables" >/dev/null
python3 - "$base" "$records" <<'PYTHON'
import json, sys, urllib.request
base, records = sys.argv[1], int(sys.argv[2])
for start in range(0, records, 1000):
    documents = [{"id": i, "name": "user-%d" % i, "payload": "x" * 150} for i in range(start, min(records, start + 1000))]
    request = urllib.request.Request(base + "/api/v1/dbs/test/tables/bench/docs", data=json.dumps(documents).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(request).read()
PYTHON

cat > "$scratch/get.lua" <<LUA
math.randomseed(7)
request = function()
  return wrk.format("GET", "/api/v1/dbs/test/tables/bench/docs/" .. math.random(0, $records - 1))
end
LUA
cat > "$scratch/query.lua" <<LUA
math.randomseed(7)
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local body = '{"query": [16, [[15, [[14, ["test"]], "bench"]], ' .. math.random(0, $records - 1) .. ']]}'
  return wrk.format(nil, "/api/v1/query", nil, body)
end
LUA

echo "## HTTP API, $connections connections, ${seconds}s, $records documents"
echo
echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)."
for workload in get query; do
  echo
  echo "### $workload"
  echo '```'
  wrk -t2 -c"$connections" -d"${seconds}s" --latency -s "$scratch/$workload.lua" "$base" | grep -E "Requests/sec|Latency|50%|99%|requests in|Non-2xx"
  echo '```'
done
