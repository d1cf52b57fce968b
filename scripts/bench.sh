#!/usr/bin/env bash
# bench.sh runs the plugin-boundary benchmarks (package ./bench), pairs every
# figure with the baseline measured in the same run, prints the table and
# writes BENCHMARKS.md. `make bench` calls it.
#
#   BENCHTIME  go test -benchtime (default 1s)
#   COUNT      go test -count; the median of the runs is reported (default 5)
#   BENCH      go test -bench pattern (default .)
#   OUT        the markdown file to write (default BENCHMARKS.md at the repo root)
#   STRICT=1   exit 1 when a target is missed
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
GO=${GO:-go}
BENCHTIME=${BENCHTIME:-1s}
COUNT=${COUNT:-5}
BENCH=${BENCH:-.}
OUT=${OUT:-$root/BENCHMARKS.md}

raw=$(mktemp)
trap 'rm -f "$raw"' EXIT

echo "== $GO test -run '^\$' -bench '$BENCH' -benchtime $BENCHTIME -count $COUNT -benchmem ./bench" >&2
if ! "$GO" test -run '^$' -bench "$BENCH" -skip '^BenchmarkSoak$' -benchtime "$BENCHTIME" -count "$COUNT" -benchmem -timeout 30m ./bench 2>&1 | tee "$raw" >&2; then
	echo "bench: go test failed" >&2
	exit 1
fi
# The soak is one long run (20,000 tasks), not a median of short ones.
if [[ "$BENCH" == . || "Soak" =~ $BENCH ]]; then
	echo "== $GO test -run '^\$' -bench '^BenchmarkSoak\$' -benchtime 1x -count 1 ./bench" >&2
	if ! "$GO" test -run '^$' -bench '^BenchmarkSoak$' -benchtime 1x -count 1 -timeout 30m ./bench 2>&1 | tee -a "$raw" >&2; then
		echo "bench: soak failed" >&2
		exit 1
	fi
fi

# The qemu rows come from the qemu module's own benchmarks (each interleaves
# its baseline): a cold task against a bare boot to the first agent answer,
# a warm echo against a bare guest-exec.
qraw=$(mktemp)
trap 'rm -f "$raw" "$qraw"' EXIT
if [[ "$BENCH" == . || "Qemu" =~ $BENCH ]]; then
	echo "== (cd plugins/qemu && $GO test -run '^\$' -bench 'BenchmarkQemu(ColdTask|WarmEcho)\$' -benchtime 5x -count 3 .)" >&2
	if ! (cd plugins/qemu && "$GO" test -run '^$' -bench 'BenchmarkQemu(ColdTask|WarmEcho)$' -benchtime 5x -count 3 -timeout 30m .) 2>&1 | tee "$qraw" >&2; then
		echo "bench: qemu benchmarks failed" >&2
		exit 1
	fi
	grep -E '^Benchmark' "$qraw" >>"$raw" || true
fi

# Rows: benchmark | what | metric (ns/op: lower is better; MB/s: higher) | target ratio | baseline label
rows='ColdStart|plugin cold start to first answered call|ns/op|1.2|minimal go-plugin gRPC plugin, start + first call
NewDriver|NewDriver on a running plugin|ns/op|1.5|one unary call (Info) to the same plugin
StatusDone|Status of a finished container|ns/op|2|native driver in process
StatusRunning|Status of a running container|ns/op|1.2|one raw go-plugin unary call (minimal plugin)
Logs256MiB|log throughput, 256 MiB through Logs|MB/s|0.6|raw unix-socket copy, same bytes, same process
Stdin256MiB|stdin throughput, 256 MiB|MB/s|0.6|raw unix-socket copy, same bytes, same process
EchoNative|`echo hello` end to end, native plugin|ns/op|1.2|native driver in process
EchoDocker|`echo hello` end to end, docker plugin|ns/op|<1.0|`docker run --rm --init busybox echo hello` (the driver runs tasks under the same init)
EchoK8s|`echo hello` pod end to end, k8s plugin|ns/op|1.0|`kubectl run --rm -i --restart=Never busybox echo hello`, same kubectl
Tasks500|500 tasks, 50 at a time, native plugin|ns/op|1.2|the same in process
SandboxExecNative|sandbox Exec of `true`, native plugin|ns/op|1.2|the same Exec in process
CopyToVolume256MiB|CopyToVolume of a 256 MiB archive, native plugin|MB/s|0.8|the same call in process
CopyFromVolume256MiB|CopyFromVolume of 256 MiB read to its end, native plugin|MB/s|0.8|the same call in process
CopyToVolumeDocker|CopyToVolume of a 256 MiB archive, docker plugin|MB/s|0.8|`docker cp - CTR:/data` of the same archive, same volume
CopyFromVolumeDocker|CopyFromVolume of 256 MiB read to its end, docker plugin|MB/s|0.8|`docker cp CTR:/data -` of the same volume'

table=$(awk -v rows="$rows" '
function median(key,    n, i, j, t, a) {
	n = split(vals[key], a, " ")
	if (n == 0 || vals[key] == "") return ""
	for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
	return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function qrow(bench, what, base, m, bm, target,    p, b) {
	p = median(bench "|ms/" m); b = median(bench "|ms/" bm)
	if (p == "" || b == "" || b + 0 == 0) return
	printf "| %s | %s | %.1f ms | %.1f ms | %.2fx | ≤ %sx | %s |\n", what, base, b, p, p / b, target, (p / b <= target ? "yes" : "**no**")
}
function human(v, unit) {
	if (v == "") return "n/a"
	if (unit == "MB/s") return sprintf("%.0f MB/s", v)
	if (v >= 1e9) return sprintf("%.3f s", v / 1e9)
	if (v >= 1e6) return sprintf("%.2f ms", v / 1e6)
	if (v >= 1e3) return sprintf("%.1f µs", v / 1e3)
	return sprintf("%.1f ns", v)
}
/^Benchmark/ {
	name = $1; sub(/-[0-9]+$/, "", name); sub(/^Benchmark/, "", name)
	for (i = 3; i < NF; i += 2) {
		vals[name "|" $(i + 1)] = vals[name "|" $(i + 1)] " " $i
		if ($(i + 1) ~ /-ns\/op$/) {
			st1 = $(i + 1); sub(/-ns\/op$/, "", st1)
			if (index(" " steps[name] " ", " " st1 " ") == 0) steps[name] = steps[name] " " st1
		}
	}
	if (!(name in seen)) order[name] = ++norder
	seen[name] = 1
}
END {
	print "| what | baseline | baseline figure | plugin figure | ratio | target | met |"
	print "|---|---|---|---|---|---|---|"
	n = split(rows, r, "\n")
	for (k = 1; k <= n; k++) {
		split(r[k], f, "|")
		# Interleaved runs (baseline and plugin alternating) come first.
		b = median(f[1] "/interleaved|baseline-" f[3]); p = median(f[1] "/interleaved|plugin-" f[3])
		if (b == "" || p == "") { b = median(f[1] "/baseline|" f[3]); p = median(f[1] "/plugin|" f[3]) }
		target = f[4]; strict = 0
		if (substr(target, 1, 1) == "<") { strict = 1; target = substr(target, 2) }
		if (b == "" || p == "" || b + 0 == 0) { ratio = "n/a"; met = "not run" }
		else {
			ratio = p / b
			if (f[3] == "MB/s") { ok = ratio >= target; tdesc = "≥ " target "x" }
			else if (strict) { ok = ratio < target; tdesc = "< " target "x" }
			else { ok = ratio <= target; tdesc = "≤ " target "x" }
			met = ok ? "yes" : "**no**"
			ratio = sprintf("%.2fx", ratio)
		}
		if (f[3] == "MB/s") tdesc = "≥ " f[4] "x"; else if (strict) tdesc = "< " target "x"; else tdesc = "≤ " f[4] "x"
		printf "| %s | %s | %s | %s | %s | %s | %s |\n", f[2], f[5], human(b, f[3]), human(p, f[3]), ratio, tdesc, met
	}
	qrow("QemuColdTask", "qemu cold task", "bare boot of the same guest to its first agent answer", "cold-task", "bare-boot", 0.5)
	qrow("QemuWarmEcho", "qemu warm echo", "bare guest-exec of echo", "warm-echo", "bare-guest-exec", 1.5)
	print "\nEvery measurement (median; in an interleaved benchmark the steps alternate within each iteration):\n"
	print "| benchmark | step | time/op | MB/s |"
	print "|---|---|---|---|"
	for (name in seen) names[++nn] = name
	for (i = 1; i <= nn; i++) for (j = i + 1; j <= nn; j++) if (order[names[j]] < order[names[i]]) { t = names[i]; names[i] = names[j]; names[j] = t }
	for (i = 1; i <= nn; i++) {
		nm = names[i]
		if (nm ~ /\/interleaved$/) {
			bench = nm; sub(/\/interleaved$/, "", bench)
			ns = split(steps[nm], st, " ")
			for (k = 1; k <= ns; k++) {
				m = median(nm "|" st[k] "-MB/s")
				printf "| %s | %s | %s | %s |\n", bench, st[k], human(median(nm "|" st[k] "-ns/op"), "ns"), (m == "" ? "" : sprintf("%.0f", m))
			}
		} else {
			bench = nm; stp = nm; sub(/\/[^\/]*$/, "", bench); sub(/^.*\//, "", stp)
			m = median(nm "|MB/s")
			printf "| %s | %s (alone) | %s | %s |\n", bench, stp, human(median(nm "|ns/op"), "ns"), (m == "" ? "" : sprintf("%.0f", m))
		}
	}
	hb = median("Tasks500/baseline|host-peak-MiB"); hp = median("Tasks500/plugin|host-peak-MiB"); pp = median("Tasks500/plugin|plugin-peak-MiB")
	if (hp != "") printf "\nPeak RSS (VmHWM) during 500 tasks: in process %.1f MiB; through the plugin host %.1f MiB + plugin %.1f MiB.\n", hb, hp, pp
	sg = median("Soak|rss-growth-MiB"); sw = median("Soak|rss-warm-MiB"); se = median("Soak|rss-end-MiB")
	gw = median("Soak|goroutines-warm"); ge = median("Soak|goroutines-end")
	if (sg != "") printf "\nSoak: 20,000 tasks through one native plugin after a 2,000-task warm-up: plugin RSS %.1f -> %.1f MiB (growth %.2f MiB, target <= 8 MiB), goroutines %d -> %d. Before protocol 1.3 dropped handles (commit af93f28, same benchmark): RSS 25.6 -> 92.9 MiB, growth 67.3 MiB.\n", sw, se, sg, gw, ge
}' "$raw")

echo
echo "$table"

if [[ "${STRICT:-}" == 1 ]] && grep -q '\*\*no\*\*\|not run' <<<"$table"; then
	missed=1
fi

cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
{
	echo "# Benchmarks: the plugin boundary"
	echo
	echo "Generated by \`scripts/bench.sh\` (\`make bench\`); do not edit by hand. Every figure is"
	echo "measured beside its baseline in the same run (median of $COUNT runs, -benchtime $BENCHTIME);"
	echo "the ratio is plugin/baseline, for times and for throughput alike. The"
	echo "benchmarks are in \`bench/\`; what each one does is in its doc comment."
	echo
	echo "Machine: $(nproc) cores, ${cpu:-unknown CPU}, kernel $(uname -r), $("$GO" version | cut -d' ' -f3-), $(date -u '+%Y-%m-%d %H:%M UTC')."
	echo
	echo "$table"
	echo
	echo "<details><summary>raw go test output</summary>"
	echo
	echo '```'
	grep -E '^(Benchmark|goos|goarch|pkg|cpu|ok|PASS|FAIL|---)' "$raw" || true
	echo '```'
	echo "</details>"
} >"$OUT"
echo
echo "wrote $OUT" >&2
exit "${missed:-0}"
