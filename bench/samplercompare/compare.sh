#!/usr/bin/env bash
export GOWORK=off # a module of its own, outside the repository's go.work
# Runs BenchmarkSamplers ROUNDS times (default 10), one process a round, so
# that each round times the three samplers back to back, seconds apart, for
# each rule count. (go test -count N instead repeats each sub-benchmark N
# times before the next, minutes apart, and the machine's speed can change
# in between.) Prints the raw benchmark lines, which benchstat reads, then,
# by rule count, each round's ratios to controlplane and their medians, and
# the curve: controlplane at each rule count against the first count, taken
# within each round.
# Usage: bench/samplercompare/compare.sh [ROUNDS]; RULES=50,200,1000 (the
# default) for the rule counts; CPU=1 for one core (one number only: the
# rounds would mix).
set -euo pipefail
cd "$(dirname "$0")"
rounds=${1:-10}
cpu=${CPU:-2}
counts=${RULES:-50,200,1000}
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS must be a positive number, got '$rounds'" >&2; exit 2; }
[[ $cpu =~ ^[1-9][0-9]*$ ]] || { echo "CPU must be one number, got '$cpu'" >&2; exit 2; }
[[ $counts =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || { echo "RULES must be comma-separated numbers, got '$counts'" >&2; exit 2; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
go test -c -o "$dir/compare.test" .
for _ in $(seq "$rounds"); do
	"$dir/compare.test" -test.run '^$' -test.bench BenchmarkSamplers -test.benchmem -test.cpu "$cpu" -test.count 1 -rules "$counts" |
		grep ns/op | tee "$dir/round"
	# One line a rule count: the count, the three samplers' ns/op, the two
	# ratios, and controlplane against controlplane at the first count.
	awk -v counts="$counts" '{
			split($1, a, "/"); n = a[2]; sub(/^rules=/, "", n); s = a[3]; sub(/-[0-9]+$/, "", s)
			ns[n, s] = $3
		}
		END {
			k = split(counts, c, ",")
			for (i = 1; i <= k; i++) {
				n = c[i]
				if (!ns[n, "controlplane"] || !ns[n, "jaegerremote"] || !ns[n, "xray"]) { print "a round lacks a sampler for " n " rules" > "/dev/stderr"; exit 1 }
				printf "%s %s %s %s %.4f %.4f %.4f\n", n, ns[n, "controlplane"], ns[n, "jaegerremote"], ns[n, "xray"],
					ns[n, "jaegerremote"] / ns[n, "controlplane"], ns[n, "xray"] / ns[n, "controlplane"], ns[n, "controlplane"] / ns[c[1], "controlplane"]
			}
		}' "$dir/round" >>"$dir/rounds"
done
median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
row='%-6s  %12s  %12s  %10s  %14s  %10s  %14s\n'
first=${counts%%,*}
for n in ${counts//,/ }; do
	echo
	echo "$n rules"
	printf "$row" round controlplane jaegerremote xray "jaeger÷ours" "xray÷ours" "ours÷ours@$first"
	printf "$row" "" "ns/op" "ns/op" "ns/op" "" "" ""
	awk -v n="$n" '$1 == n' "$dir/rounds" >"$dir/rounds.$n"
	r=0
	while read -r _ ours jaeger xray rj rx scale; do
		r=$((r + 1))
		printf "$row" "$r" "$ours" "$jaeger" "$xray" "$(printf '%.2f×' "$rj")" "$(printf '%.1f×' "$rx")" "$(printf '%.2f×' "$scale")"
	done <"$dir/rounds.$n"
	col() { cut -d' ' -f"$1" "$dir/rounds.$n" | median; }
	printf "$row" median "$(col 2)" "$(col 3)" "$(col 4)" "$(printf '%.2f×' "$(col 5)")" "$(printf '%.1f×' "$(col 6)")" "$(printf '%.2f×' "$(col 7)")"
done
