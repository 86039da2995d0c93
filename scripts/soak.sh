#!/usr/bin/env bash
# The long soak: TestSoak (cmd/chimeraforge/soak_test.go) for hours instead
# of the two minutes CI gives it. The daemon runs as a child process against
# its embedded simulators, with faults, a refused target and a reload every
# phase; the test fails on a counter that goes down, a series the
# configuration does not imply, or goroutines, descriptors, heap, threads or
# memory that grow from the first half of the run to the second
# (docs/reliability.md, "Soak").
#
#   scripts/soak.sh [DURATION [PHASE]]     default 6h and 30s
#
# DURATION and PHASE are Go durations: the run, and the time between two
# reloads. The daemon is built without -race (what runs in production);
# CF_SOAK_RACE=1 builds both with it. The log goes to stdout and to
# soak-DATE.log in CF_SOAK_LOG_DIR (default: the current directory).
set -euo pipefail

duration=${1:-6h}
phase=${2:-30s}
log_dir=${CF_SOAK_LOG_DIR:-$PWD}
cd "$(dirname "$0")/.."

# go test's own timeout: the run plus an hour for the build, the warm-up
# and the shutdown. Durations in whole h, m and s (6h, 90m, 1h30m).
seconds=0
rest=$duration
while [[ $rest =~ ^([0-9]+)([hms])(.*)$ ]]; do
	n=${BASH_REMATCH[1]}
	case ${BASH_REMATCH[2]} in
	h) seconds=$((seconds + n * 3600)) ;;
	m) seconds=$((seconds + n * 60)) ;;
	s) seconds=$((seconds + n)) ;;
	esac
	rest=${BASH_REMATCH[3]}
done
if [ -n "$rest" ] || [ "$seconds" -eq 0 ]; then
	echo "soak.sh: DURATION '$duration': want whole hours, minutes and seconds, such as 6h or 1h30m" >&2
	exit 2
fi
seconds=$((seconds + 3600))

race=()
if [ -n "${CF_SOAK_RACE:-}" ]; then race=(-race); fi
log="$log_dir/soak-$(date -u +%Y%m%dT%H%M%SZ).log"
echo "soak.sh: $duration, a reload every $phase; log: $log"
CF_SOAK_DURATION="$duration" CF_SOAK_PHASE="$phase" \
	go test "${race[@]}" -count=1 -v -run '^TestSoak$' -timeout "${seconds}s" ./cmd/chimeraforge/ 2>&1 | tee "$log"
