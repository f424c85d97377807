#!/usr/bin/env bash
# shards.sh: bench/loadgen against three serve replicas on a Redis Cluster of
# one master and on one of three masters (a shard per master), and on a
# plain node (one shard: the layout before sharding), in turn on the same
# machine, with each master's CPU (INFO cpu) over the run. Loopback only;
# everything it starts lives in a temporary directory and is stopped at the
# end.
#
#   bash bench/loadgen/shards.sh [rounds] [loadgen flags...]
#
# Defaults: 2 rounds of -clients 200 -rules 10 -closed-loop -duration 20s
# -warmup 5s. BASE (default 17500) is the first of the ports it uses.
set -euo pipefail
cd "$(dirname "$0")/../.."

rounds=${1:-2}
shift || true
flags=("$@")
if [ ${#flags[@]} -eq 0 ]; then
  flags=(-clients 200 -rules 10 -closed-loop -duration 20s -warmup 5s)
fi
base=${BASE:-17500}
dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

go build -o "$dir/cp" ./cmd/controlplane
go build -o "$dir/loadgen" ./bench/loadgen

# node PORT: a cluster-enabled redis-server without persistence.
node() {
  mkdir -p "$dir/$1"
  redis-server --port "$1" --bind 127.0.0.1 --save "" --appendonly no \
    --cluster-enabled yes --cluster-config-file "$dir/$1/nodes.conf" \
    --dir "$dir/$1" --logfile "$dir/$1/log" &
  pids+=($!)
  until redis-cli -p "$1" ping >/dev/null 2>&1; do sleep 0.1; done
}

# A plain node.
plain=$((base + 4))
mkdir -p "$dir/$plain"
redis-server --port "$plain" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir/$plain" --logfile "$dir/$plain/log" &
pids+=($!)
until redis-cli -p "$plain" ping >/dev/null 2>&1; do sleep 0.1; done
# One master holding every slot.
one=$((base))
node "$one"
redis-cli -p "$one" cluster addslotsrange 0 16383 >/dev/null
# Three masters, no replicas, slots split evenly by redis-cli.
three=($((base + 1)) $((base + 2)) $((base + 3)))
for p in "${three[@]}"; do node "$p"; done
redis-cli --cluster create "${three[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes >/dev/null
for p in "$one" "${three[@]}"; do
  until redis-cli -p "$p" cluster info | grep -q 'cluster_state:ok'; do sleep 0.1; done
done

# serve N URL: three replicas on the URL, gRPC on ports base+10N+{0,2,4}.
servers=""
serve() {
  servers=""
  for i in 0 1 2; do
    g=$((base + 10 * $1 + 2 * i + 10)) h=$((g + 1))
    "$dir/cp" serve --grpc-addr "127.0.0.1:$g" --http-addr "127.0.0.1:$h" --jaeger-addr "" \
      --redis-url "$2" --log-level warn 2>>"$dir/serve.log" &
    pids+=($!)
    until curl -sf "http://127.0.0.1:$h/readyz" >/dev/null; do sleep 0.1; done
    servers+="${servers:+,}127.0.0.1:$g"
  done
}

cpu() { # total CPU seconds of the Redis on port $1
  redis-cli -p "$1" info cpu | tr -d '\r' | awk -F: '/^used_cpu_(sys|user):/ {s += $2} END {printf "%.3f", s}'
}

# run NAME SERVERS PORTS...: one loadgen run, then reports/s, p99 and each
# master's CPU over the run and per report.
run() {
  local name=$1 srv=$2
  shift 2
  local before=() p
  for p in "$@"; do before+=("$(cpu "$p")"); done
  local out
  out=$("$dir/loadgen" -server "$srv" -http "" -rule-prefix "lg$RANDOM" "${flags[@]}" 2>>"$dir/loadgen.log" | tail -1)
  local reports rps p99
  reports=$(jq -r .reports <<<"$out")
  rps=$(jq -r .reports_per_sec <<<"$out")
  p99=$(jq -r .report_p99_ms <<<"$out")
  local i=0 line=""
  for p in "$@"; do
    local used
    used=$(awk -v a="$(cpu "$p")" -v b="${before[$i]}" -v n="$reports" 'BEGIN {printf "%.1f s = %.1f µs/report", a - b, 1e6 * (a - b) / n}')
    line+=" :$p $used;"
    i=$((i + 1))
  done
  printf '%-14s %8.0f reports/s  p99 %6.1f ms  errors %s  redis CPU%s\n' "$name" "$rps" "$p99" "$(jq -r .report_errors <<<"$out")" "$line"
}

serve 2 "redis://127.0.0.1:$plain"
plain_servers=$servers
serve 0 "redis+cluster://127.0.0.1:$one"
one_servers=$servers
serve 1 "redis+cluster://$(IFS=,; echo "${three[*]/#/127.0.0.1:}")"
three_servers=$servers

echo "loadgen ${flags[*]}; 3 serve replicas each; $(nproc) cores; $(date -u +%FT%TZ)"
for r in $(seq "$rounds"); do
  run "plain node" "$plain_servers" "$plain"
  run "1 master" "$one_servers" "$one"
  run "3 masters" "$three_servers" "${three[@]}"
done
