#!/usr/bin/env bash
# shards.sh: bench/loadgen against three serve replicas on a Redis Cluster
# of one master and on one of three masters (a shard per master), and on a
# plain node (one shard: the layout before sharding), in turn on the same
# machine, with each master's CPU (INFO cpu) and the replicas' CPU (/proc)
# over the run. Loopback only; everything it starts lives in a temporary
# directory and is stopped at the end.
#
#   bash bench/loadgen/shards.sh [rounds] [loadgen flags...]
#
# Defaults: 2 rounds of -clients 200 -rules 10 -closed-loop -duration 20s
# -warmup 5s. BASE (default 17500) is the first of the ports it uses (up
# to BASE+55, and BASE+10000 up for the Cluster buses).
#
# REDIS_CPU=F (e.g. 0.05) runs each redis-server in a CPU cgroup (v1,
# /sys/fs/cgroup/cpu; root) of its own limited to F of a core, the same
# for every master of every setup, so that Redis, not the replicas or the
# load generator, is the limit, as on a deployment whose replicas have
# cores of their own. The cgroups are removed at the end.
# CLUSTER_REPLICAS=1 adds a Cluster of three masters with a replica each.
# SERVE_REPLICAS (1-5, default 3) is the number of serve replicas a setup
# has: each has one report batch at the store at a time.
set -euo pipefail
cd "$(dirname "$0")/../.."

rounds=${1:-2}
shift || true
flags=("$@")
if [ ${#flags[@]} -eq 0 ]; then
  flags=(-clients 200 -rules 10 -closed-loop -duration 20s -warmup 5s)
fi
base=${BASE:-17500}
replicas=${SERVE_REPLICAS:-3}
case $replicas in
[1-5]) ;;
*)
  echo "shards.sh: SERVE_REPLICAS: want 1 to 5, got '$replicas'" >&2
  exit 2
  ;;
esac
limit=${REDIS_CPU:-}
dir=$(mktemp -d)
pids=()
cg=""
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "$cg" ]; then
    # A cgroup is removed once its processes have gone.
    for _ in $(seq 50); do
      for c in "$cg"/*/; do [ -d "$c" ] && rmdir "$c" 2>/dev/null; done
      rmdir "$cg" 2>/dev/null && break
      sleep 0.1
    done
    [ ! -d "$cg" ] || echo "shards.sh: could not remove the cgroup $cg" >&2
  fi
  rm -rf "$dir"
}
trap cleanup EXIT

if [ -n "$limit" ]; then
  if ! awk -v f="$limit" -v n="$(nproc)" 'BEGIN {exit !(f + 0 > 0 && f + 0 <= n)}'; then
    echo "shards.sh: REDIS_CPU: want a fraction of a core in (0, $(nproc)], got '$limit'" >&2
    exit 2
  fi
  root=/sys/fs/cgroup/cpu
  if [ ! -w "$root/cgroup.procs" ] || ! mkdir "$root/shards.$$" 2>/dev/null; then
    echo "shards.sh: REDIS_CPU needs the cgroup v1 CPU controller at $root, writable (root): could not make a cgroup there" >&2
    exit 1
  fi
  cg=$root/shards.$$
  # A period short enough that a throttled Redis waits milliseconds, not a
  # tenth of a second, and long enough for the kernel's 1 ms least quota.
  read -r period quota < <(awk -v f="$limit" 'BEGIN {p = int(1000 / f) + 1; if (p < 10000) p = 10000; printf "%d %d\n", p, int(p * f)}')
fi

go build -o "$dir/cp" ./cmd/controlplane
go build -o "$dir/loadgen" ./bench/loadgen

# redis PORT ARGS...: a redis-server without persistence; with REDIS_CPU,
# in a cgroup of its own from its first instruction.
redis() {
  local port=$1
  shift
  mkdir -p "$dir/$port"
  local args=(--port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir/$port" --logfile "$dir/$port/log" "$@")
  if [ -n "$cg" ]; then
    mkdir "$cg/$port"
    echo "$period" >"$cg/$port/cpu.cfs_period_us"
    echo "$quota" >"$cg/$port/cpu.cfs_quota_us"
    sh -c 'echo $$ >"$0/cgroup.procs" && exec redis-server "$@"' "$cg/$port" "${args[@]}" &
  else
    redis-server "${args[@]}" &
  fi
  pids+=($!)
  until redis-cli -p "$port" ping >/dev/null 2>&1; do
    kill -0 "$!" 2>/dev/null || { echo "shards.sh: redis-server on :$port exited" >&2; tail -3 "$dir/$port/log" >&2; exit 1; }
    sleep 0.1
  done
}

# node PORT: a cluster-enabled redis-server.
node() {
  redis "$1" --cluster-enabled yes --cluster-config-file "$dir/$1/nodes.conf"
}

# A plain node.
plain=$((base + 4))
redis "$plain"
# One master holding every slot.
one=$((base))
node "$one"
redis-cli -p "$one" cluster addslotsrange 0 16383 >/dev/null
# Three masters, no replicas, slots split evenly by redis-cli.
three=($((base + 1)) $((base + 2)) $((base + 3)))
for p in "${three[@]}"; do node "$p"; done
redis-cli --cluster create "${three[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes >/dev/null
clusters=("$one" "${three[@]}")
# Three masters with a replica each; which node became a master is read
# back once the Cluster is made.
six=()
if [ "${CLUSTER_REPLICAS:-0}" = 1 ]; then
  for i in 0 1 2 3 4 5; do six+=($((base + 50 + i))); done
  for p in "${six[@]}"; do node "$p"; done
  redis-cli --cluster create "${six[@]/#/127.0.0.1:}" --cluster-replicas 1 --cluster-yes >/dev/null
  clusters+=("${six[@]}")
fi
for p in "${clusters[@]}"; do
  until redis-cli -p "$p" cluster info | grep -q 'cluster_state:ok'; do sleep 0.1; done
done
six_masters=() six_replicas=()
for p in "${six[@]}"; do
  until redis-cli -p "$p" info replication | grep -q '^role:'; do sleep 0.1; done
  if redis-cli -p "$p" info replication | grep -q '^role:master'; then six_masters+=("$p"); else six_replicas+=("$p"); fi
done

# serve N URL: the replicas on the URL, gRPC on ports base+10N+10+2i.
servers="" serve_pids=""
serve() {
  servers="" serve_pids=""
  for i in $(seq 0 $((replicas - 1))); do
    g=$((base + 10 * $1 + 2 * i + 10)) h=$((g + 1))
    "$dir/cp" serve --grpc-addr "127.0.0.1:$g" --http-addr "127.0.0.1:$h" --jaeger-addr "" --xray-addr "" \
      --redis-url "$2" --log-level warn 2>>"$dir/serve.log" &
    pids+=($!)
    serve_pids+="${serve_pids:+ }$!"
    until curl -sf "http://127.0.0.1:$h/readyz" >/dev/null; do
      kill -0 "$!" 2>/dev/null || { echo "shards.sh: serve on :$g exited; $dir/serve.log:" >&2; tail -3 "$dir/serve.log" >&2; exit 1; }
      sleep 0.1
    done
    servers+="${servers:+,}127.0.0.1:$g"
  done
}

cpu() { # total CPU seconds of the Redis on port $1
  redis-cli -p "$1" info cpu | tr -d '\r' | awk -F: '/^used_cpu_(sys|user):/ {s += $2} END {printf "%.3f", s}'
}
throttled() { # periods and throttled periods of the Redis on port $1's cgroup
  awk '/^nr_periods / {p = $2} /^nr_throttled / {t = $2} END {print p + 0, t + 0}' "$cg/$1/cpu.stat"
}
proc_wait() { # seconds the threads of the processes $@ waited, runnable, for a core (schedstat)
  local p
  for p in "$@"; do cat /proc/"$p"/task/*/schedstat; done | awk '{s += $2} END {printf "%.3f", s / 1e9}'
}
proc_cpu() { # total CPU seconds of the processes $@ (/proc: utime + stime)
  local p t=0
  for p in "$@"; do
    t=$((t + $(sed 's/^.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')))
  done
  awk -v t="$t" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.3f", t / hz}'
}

# run NAME SERVERS SERVE_PIDS MASTERS [-- REPLICAS]: one loadgen run, then
# reports/s, p99, each master's CPU over the run and per report (with
# REDIS_CPU: its share of the quota and of the periods it was throttled
# in), the Cluster replicas' CPU per report, the serve replicas' CPU and
# the time their threads waited, runnable, for a core (both in cores: a
# starved replica waits long), and loadgen's CPU, over the loadgen run.
run() {
  local name=$1 srv=$2 spids=$3
  shift 3
  local ports=("$@") before=() thr=() p
  for p in "${ports[@]}"; do
    [ "$p" = -- ] && continue
    before+=("$(cpu "$p")")
    if [ -n "$cg" ]; then thr+=("$(throttled "$p")"); fi
  done
  local sbefore wbefore
  sbefore=$(proc_cpu $spids) wbefore=$(proc_wait $spids)
  local out
  out=$(/usr/bin/time -f '%e %U %S' -o "$dir/time" "$dir/loadgen" -server "$srv" -http "" -rule-prefix "lg$RANDOM" "${flags[@]}" 2>>"$dir/loadgen.log" | tail -1)
  local wall lgu lgs
  read -r wall lgu lgs <"$dir/time"
  local safter wafter
  safter=$(proc_cpu $spids) wafter=$(proc_wait $spids)
  local reports rps p99
  reports=$(jq -r .reports <<<"$out")
  rps=$(jq -r .reports_per_sec <<<"$out")
  p99=$(jq -r .report_p99_ms <<<"$out")
  local i=0 line=" redis CPU"
  for p in "${ports[@]}"; do
    if [ "$p" = -- ]; then
      line="${line%,}; replicas"
      continue
    fi
    local used
    used=$(awk -v a="$(cpu "$p")" -v b="${before[$i]}" -v n="$reports" 'BEGIN {printf "%.1f s = %.1f µs/report", a - b, 1e6 * (a - b) / n}')
    if [ -n "$cg" ]; then
      local p0 t0 p1 t1
      read -r p0 t0 <<<"${thr[$i]}"
      read -r p1 t1 <<<"$(throttled "$p")"
      used+=$(awk -v a="$(cpu "$p")" -v b="${before[$i]}" -v w="$wall" -v f="$limit" -v dp=$((p1 - p0)) -v dt=$((t1 - t0)) \
        'BEGIN {printf " (%.0f%% of quota, throttled %.0f%%)", 100 * (a - b) / (w * f), dp ? 100 * dt / dp : 0}')
    fi
    line+=" :$p $used,"
    i=$((i + 1))
  done
  line=${line%,}
  printf '%-14s %8.0f reports/s  p99 %6.1f ms  errors %s %s; serve %.2f cores = %.0f µs/report, %.2f waiting for a core; loadgen %.2f cores\n' \
    "$name" "$rps" "$p99" "$(jq -r .report_errors <<<"$out")" "$line" \
    "$(awk -v a="$safter" -v b="$sbefore" -v w="$wall" 'BEGIN {print (a - b) / w}')" \
    "$(awk -v a="$safter" -v b="$sbefore" -v n="$reports" 'BEGIN {print 1e6 * (a - b) / n}')" \
    "$(awk -v a="$wafter" -v b="$wbefore" -v w="$wall" 'BEGIN {print (a - b) / w}')" \
    "$(awk -v u="$lgu" -v s="$lgs" -v w="$wall" 'BEGIN {print (u + s) / w}')"
}

serve 2 "redis://127.0.0.1:$plain"
plain_servers=$servers plain_pids=$serve_pids
serve 0 "redis+cluster://127.0.0.1:$one"
one_servers=$servers one_pids=$serve_pids
serve 1 "redis+cluster://$(IFS=,; echo "${three[*]/#/127.0.0.1:}")"
three_servers=$servers three_pids=$serve_pids
if [ ${#six[@]} -gt 0 ]; then
  serve 3 "redis+cluster://$(IFS=,; echo "${six_masters[*]/#/127.0.0.1:}")"
  six_servers=$servers six_pids=$serve_pids
fi

echo "loadgen ${flags[*]}; $replicas serve replicas each; $(nproc) cores; $(date -u +%FT%TZ); load average $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -n "$cg" ]; then
  echo "each redis-server limited to $limit of a core (cgroup: quota $quota µs every $period µs)"
fi
for r in $(seq "$rounds"); do
  run "plain node" "$plain_servers" "$plain_pids" "$plain"
  run "1 master" "$one_servers" "$one_pids" "$one"
  run "3 masters" "$three_servers" "$three_pids" "${three[@]}"
  if [ ${#six[@]} -gt 0 ]; then
    run "3x2 Cluster" "$six_servers" "$six_pids" "${six_masters[@]}" -- "${six_replicas[@]}"
  fi
done
echo "load average at the end $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%FT%TZ)"
