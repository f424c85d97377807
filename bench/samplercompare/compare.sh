#!/usr/bin/env bash
# Runs BenchmarkSamplers ROUNDS times (default 10), one process a round, so
# that each round times the three samplers back to back, seconds apart.
# (go test -count N instead repeats each sub-benchmark N times before the
# next, minutes apart, and the machine's speed can change in between.)
# Prints the raw benchmark lines, which benchstat reads, then each round's
# ratios to controlplane and their medians.
# Usage: bench/samplercompare/compare.sh [ROUNDS]; CPU=1 for one core.
set -euo pipefail
cd "$(dirname "$0")"
rounds=${1:-10}
cpu=${CPU:-2}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
go test -c -o "$dir/compare.test" .
for _ in $(seq "$rounds"); do
	"$dir/compare.test" -test.run '^$' -test.bench BenchmarkSamplers -test.benchmem -test.cpu "$cpu" -test.count 1 |
		grep ns/op | tee -a "$dir/raw"
done
median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
awk '{split($1, a, "[/-]"); ns[a[2]] = $3}
	/xray/ {printf "%s %s %s %.2f %.1f\n", ns["controlplane"], ns["jaegerremote"], ns["xray"], ns["jaegerremote"] / ns["controlplane"], ns["xray"] / ns["controlplane"]}' \
	"$dir/raw" >"$dir/rounds"
echo
echo "round  controlplane ns/op  jaegerremote ns/op  xray ns/op  jaegerremote÷controlplane  xray÷controlplane"
awk '{printf "%5d  %18s  %18s  %10s  %24s×  %16s×\n", NR, $1, $2, $3, $4, $5}' "$dir/rounds"
printf "median %17s  %18s  %10s  %24s×  %16s×\n" \
	"$(cut -d' ' -f1 "$dir/rounds" | median)" "$(cut -d' ' -f2 "$dir/rounds" | median)" \
	"$(cut -d' ' -f3 "$dir/rounds" | median)" "$(cut -d' ' -f4 "$dir/rounds" | median)" \
	"$(cut -d' ' -f5 "$dir/rounds" | median)"
