#!/usr/bin/env bash
# Runs BenchmarkSamplers ROUNDS times (default 10), one process a round, so
# that each round times the three samplers back to back, seconds apart.
# (go test -count N instead repeats each sub-benchmark N times before the
# next, minutes apart, and the machine's speed can change in between.)
# Prints the raw benchmark lines, which benchstat reads, then each round's
# ratios to controlplane and their medians.
# Usage: bench/samplercompare/compare.sh [ROUNDS]; CPU=1 for one core (one
# number only: the rounds would mix).
set -euo pipefail
cd "$(dirname "$0")"
rounds=${1:-10}
cpu=${CPU:-2}
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS must be a positive number, got '$rounds'" >&2; exit 2; }
[[ $cpu =~ ^[1-9][0-9]*$ ]] || { echo "CPU must be one number, got '$cpu'" >&2; exit 2; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
go test -c -o "$dir/compare.test" .
for _ in $(seq "$rounds"); do
	"$dir/compare.test" -test.run '^$' -test.bench BenchmarkSamplers -test.benchmem -test.cpu "$cpu" -test.count 1 |
		grep ns/op | tee "$dir/round"
	# One line a round: the three samplers' ns/op and the two ratios.
	awk '{split($1, a, "[/-]"); ns[a[2]] = $3}
		END {
			if (!ns["controlplane"] || !ns["jaegerremote"] || !ns["xray"]) { print "a round lacks a sampler" > "/dev/stderr"; exit 1 }
			printf "%s %s %s %.4f %.4f\n", ns["controlplane"], ns["jaegerremote"], ns["xray"], ns["jaegerremote"] / ns["controlplane"], ns["xray"] / ns["controlplane"]
		}' "$dir/round" >>"$dir/rounds"
done
median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
row='%-6s  %12s  %12s  %10s  %14s  %10s\n'
echo
printf "$row" round controlplane jaegerremote xray "jaeger÷ours" "xray÷ours"
printf "$row" "" "ns/op" "ns/op" "ns/op" "" ""
n=0
while read -r ours jaeger xray rj rx; do
	n=$((n + 1))
	printf "$row" "$n" "$ours" "$jaeger" "$xray" "$(printf '%.2f×' "$rj")" "$(printf '%.1f×' "$rx")"
done <"$dir/rounds"
col() { cut -d' ' -f"$1" "$dir/rounds" | median; }
printf "$row" median "$(col 1)" "$(col 2)" "$(col 3)" "$(printf '%.2f×' "$(col 4)")" "$(printf '%.1f×' "$(col 5)")"
