#!/usr/bin/env bash
# Checks the GPU collector on a machine with an NVIDIA GPU and driver.
#
#   scripts/gpu-check.sh
#
# Builds the daemon, runs the built-in demo (`chimeraforge run` without
# --config) on 127.0.0.1:PORT for about 10 s, scrapes /metrics once, prints
# every chimeraforge_gpu_ line, stops the daemon, and exits non-zero unless
# the scrape holds `chimeraforge_gpu_collector_up 1` (NVML initialised).
# The whole run is bounded to 110 s.
#
# Environment: CF_GPU_CHECK_PORT (default 19464), CF_GPU_CHECK_SECONDS
# (default 10: how long the demo runs before the scrape). (Never
# CHIMERAFORGE_*: the daemon reads every such variable as configuration.)
set -euo pipefail

# Bound the whole script: re-run it under timeout(1) once.
if [[ -z "${CF_GPU_CHECK_BOUNDED:-}" ]]; then
	CF_GPU_CHECK_BOUNDED=1 exec timeout --kill-after=5 110 bash "$0" "$@"
fi

REPO_DIR="$(cd "$(dirname "$0")/.." && pwd)"
PORT="${CF_GPU_CHECK_PORT:-19464}"
RUN_SECONDS="${CF_GPU_CHECK_SECONDS:-10}"
URL="http://127.0.0.1:$PORT/metrics"
READY_TIMEOUT=30 # seconds for /metrics to answer after the start
STOP_TIMEOUT=10  # seconds from SIGTERM to exit, then SIGKILL

log() { printf 'gpu-check: %s\n' "$*" >&2; }

tmp="$(mktemp -d)"
pid=""
# shellcheck disable=SC2317 # invoked by the traps
cleanup() {
	if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq $((STOP_TIMEOUT * 10))); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 124' TERM INT # so that cleanup runs when timeout(1) fires

if command -v nvidia-smi >/dev/null; then
	nvidia-smi --query-gpu=index,name,driver_version --format=csv,noheader >&2 || true
else
	log "nvidia-smi not found: expect chimeraforge_gpu_collector_up 0"
fi

if curl -fsS -o /dev/null --max-time 2 "$URL" 2>/dev/null; then
	log "something already answers on 127.0.0.1:$PORT; set CF_GPU_CHECK_PORT"
	exit 2
fi

log "building the daemon (cgo: the GPU collector links go-nvml)"
(cd "$REPO_DIR" && CGO_ENABLED=1 go build -o "$tmp/chimeraforge" ./cmd/chimeraforge)

log "running the built-in demo on 127.0.0.1:$PORT for ${RUN_SECONDS}s"
"$tmp/chimeraforge" run --web.listen-address="127.0.0.1:$PORT" >"$tmp/daemon.log" 2>&1 &
pid=$!

ready=""
for _ in $(seq $((READY_TIMEOUT * 10))); do
	if ! kill -0 "$pid" 2>/dev/null; then
		log "the daemon exited early; its log:"
		cat "$tmp/daemon.log" >&2
		exit 1
	fi
	if curl -fsS -o /dev/null --max-time 2 "$URL" 2>/dev/null; then
		ready=1
		break
	fi
	sleep 0.1
done
if [[ -z "$ready" ]]; then
	log "/metrics did not answer within ${READY_TIMEOUT}s; the daemon's log:"
	cat "$tmp/daemon.log" >&2
	exit 1
fi

sleep "$RUN_SECONDS" &
wait $! # interruptible, unlike a foreground sleep
curl -fsS --max-time 10 -H 'Accept: text/plain' "$URL" >"$tmp/metrics"

grep '^chimeraforge_gpu_' "$tmp/metrics" || log "no chimeraforge_gpu_ series at all: is the GPU collector registered?"
grep -i 'gpu\|nvml' "$tmp/daemon.log" >&2 || true

# Without NVML the demo falls back to its simulated GPU (name="simulated"),
# which would also say up 1: a real device must be there too.
if ! grep -qx 'chimeraforge_gpu_collector_up 1' "$tmp/metrics"; then
	log "FAIL: chimeraforge_gpu_collector_up 1 is absent"
	exit 1
fi
if ! grep '^chimeraforge_gpu_memory_total_bytes{' "$tmp/metrics" | grep -vq 'name="simulated"'; then
	log "FAIL: only the simulated GPU is exported: NVML did not initialise"
	exit 1
fi
log "OK: NVML initialised and the GPU collector exports real devices"
exit 0
