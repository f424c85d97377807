#!/usr/bin/env bash
# budgetsim.sh: a live bench/loadgen run against serve (embedded store) with
# an enforcing budget, then `controlplane simulate --fleet` (the server's
# pipeline on a virtual clock) for the same traffic shape, and both
# budgets' spend side by side (docs/BENCHMARKS.md, "The fleet simulator
# against a live run"). Loopback only; what it starts lives in a temporary
# directory and is stopped at the end.
#
#   bash bench/loadgen/budgetsim.sh AMOUNT DURATION [CLIENTS [RPS [ZIPF [SEEDS]]]]
#
# e.g. `bash bench/loadgen/budgetsim.sh 500 15m 100 2000 1.1 5`. The
# simulator gets the traffic loadgen delivered (RPS times its requests
# delivered over those asked: loadgen paces them by the clock, so that is
# RPS within the Poisson arrivals' chance), starting when the live fleet's
# traffic did (the instances' start plus the rate-weighted mean of when
# they got their rules) until loadgen stopped it, shifted by under a report interval so that the
# simulated controller ticks in the live one's phase (from the time of its
# last decision, a tick after the run: serve's ticker runs from its start,
# the simulator's from multiples of the interval), and SEEDS report-jitter
# seeds (default 5). BASE (default 17370) is the first of the two ports
# serve takes. OUT, if set, is a directory that keeps the live run's files
# (loadgen.json, loadgen.log, status.json, serve.log, serve's metrics.txt
# at the end) and the simulator's JSON lines, one a seed (sim.jsonl).
set -euo pipefail
cd "$(dirname "$0")/../.."

amount=${1:?AMOUNT}
duration=${2:?DURATION}
clients=${3:-100}
rps=${4:-2000}
zipf=${5:-1.1}
seeds=${6:-5}
base=${BASE:-17370}
grpc=127.0.0.1:$base
http=127.0.0.1:$((base + 1))
dir=$(mktemp -d)
spid=
cleanup() {
  if [ -n "$spid" ]; then kill "$spid" 2>/dev/null || true; wait "$spid" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT

go build -o "$dir/controlplane" ./cmd/controlplane
go build -o "$dir/loadgen" ./bench/loadgen
cp=("$dir/controlplane" --server "$grpc")

"$dir/controlplane" serve --grpc-addr "$grpc" --http-addr "$http" --jaeger-addr "" --xray-addr "" \
  --report-interval 10s >"$dir/serve.log" 2>&1 &
spid=$!
for _ in $(seq 50); do "${cp[@]}" rules list >/dev/null 2>&1 && break; sleep 0.2; done
"${cp[@]}" budgets create lgb --amount "$amount" --service loadgen --mode enforce >/dev/null
"$dir/loadgen" --server "$grpc" --http "$http" --clients "$clients" --rules 10 --fleet-rps "$rps" --zipf "$zipf" \
  --reservoir 10 --fixed-rate 0.05 --edit=false --duration "$duration" --warmup 5s --budget lgb \
  >"$dir/loadgen.json" 2>"$dir/loadgen.log"
"${cp[@]}" budgets status lgb -o json >"$dir/status.json"
curl -s "http://$http/metrics" >"$dir/metrics.txt" || true
kill "$spid"
wait "$spid" 2>/dev/null || true
spid=

# The rules loadgen made, for the simulator.
{
  echo "rules:"
  echo '  - {name: lg-00, priority: 99, service_name: loadgen, url_path: "*", fixed_rate: 0.05, reservoir_size: 10}'
  for i in 1 2 3 4 5 6 7 8 9; do
    echo "  - {name: lg-0$i, priority: $((100 + i)), service_name: loadgen, url_path: \"/r$i/*\", fixed_rate: 0.05, reservoir_size: 10}"
  done
} >"$dir/rules.yaml"

if [ -n "${OUT:-}" ]; then mkdir -p "$OUT" && cp "$dir"/{loadgen.json,loadgen.log,status.json,serve.log,metrics.txt} "$OUT"/; fi

read -r rpd simstart dur live ratio < <(python3 - "$dir" "$rps" <<'EOF'
import json, sys, datetime
d, rps = sys.argv[1], float(sys.argv[2])
lg = json.load(open(d + "/loadgen.json"))
st = json.load(open(d + "/status.json"))
s = lg["launched_unix"] + lg["rules_held_ms"]["rate_weighted_mean"] / 1000
tick = datetime.datetime.fromisoformat(st["computed_time"].replace("Z", "+00:00")).timestamp()
sim = datetime.datetime.fromtimestamp(s - tick % 10, datetime.timezone.utc)
rpd = rps * lg["requests_delivered_pct"] / 100 * 86400
print(round(rpd), sim.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "%.3fs" % (lg["stopped_unix"] - s),
      st.get("sampled_traces", 0), st.get("spent_ratio", 0))
EOF
)
echo "live: $live traces counted, spend ratio $ratio (loadgen: $(grep -o 'traces: .*' "$dir/loadgen.log"); $(grep -o 'requests: .*' "$dir/loadgen.log"))"
for seed in $(seq 0 $((seeds - 1))); do
  "$dir/controlplane" simulate -f "$dir/rules.yaml" --share lg-00:1 --requests-per-day "$rpd" --fleet "$clients" \
    --zipf "$zipf" --service loadgen --budget "$amount" --budget-service loadgen --interval 10s \
    --start "$simstart" --duration "$dur" --seed "$seed" | tail -1 | tee -a "${OUT:-$dir}/sim.jsonl" |
    python3 -c "import json,sys; d=json.load(sys.stdin); print('simulated, seed $seed: %d traces counted, spend ratio %.6g (%+.2f %%)' % (d['spent_traces'], d['spent_ratio'], (d['spent_traces']/max(1,$live)-1)*100))"
done
echo "simulate -f rules.yaml --share lg-00:1 --requests-per-day $rpd --fleet $clients --zipf $zipf --service loadgen --budget $amount --budget-service loadgen --interval 10s --start $simstart --duration $dur"
