#!/usr/bin/env bash
# A real, CPU-only Ollama and a tiny generated model for tests, on a fresh
# Debian machine with no model downloads.
#
#   scripts/ollama-test-server.sh build
#       Builds Ollama from the Go module proxy into the cache (first run ~7 min,
#       then skipped), writes the tiny model, and prints on stdout
#           CF_TEST_OLLAMA_BIN=...
#           CF_TEST_OLLAMA_MODEL=...   (directory with tiny.gguf and Modelfile)
#       so that `eval "$(scripts/ollama-test-server.sh build)"` sets both.
#       Progress goes to stderr.
#   scripts/ollama-test-server.sh start PORT [NUM_PARALLEL]
#       Starts `ollama serve` on 127.0.0.1:PORT with its own models and home
#       under $CACHE/servers/PORT/, waits for it, and creates the model "tiny".
#   scripts/ollama-test-server.sh stop PORT
#   scripts/ollama-test-server.sh stop-all
#
# Environment: CF_CACHE_DIR (default ${XDG_CACHE_HOME:-$HOME/.cache}/chimeraforge);
# CF_TEST_OLLAMA_BIN and CF_TEST_OLLAMA_MODEL override what `start` uses;
# OLLAMA_KEEP_ALIVE (default 30m) and other OLLAMA_* variables pass through to
# the server. (Never CHIMERAFORGE_*: the daemon reads every such variable as a
# configuration key.)
set -euo pipefail

# The one place the Ollama version is pinned.
OLLAMA_VERSION=v0.17.4

REPO_DIR="$(cd "$(dirname "$0")/.." && pwd)"
CACHE_DIR="${CF_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/chimeraforge}"
OLLAMA_BIN_DEFAULT="$CACHE_DIR/ollama-$OLLAMA_VERSION/ollama"
MODEL_DIR_DEFAULT="$CACHE_DIR/tiny-model"
SERVERS_DIR="$CACHE_DIR/servers"
MODEL_NAME=tiny

# Bounds on every wait, in seconds.
START_TIMEOUT=30
CREATE_TIMEOUT=60
STOP_TIMEOUT=10

log() { printf 'ollama-test-server: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

as_root() {
	if [ "$(id -u)" = 0 ]; then "$@"
	elif command -v sudo >/dev/null; then sudo "$@"
	else die "need root (or sudo) to run: $*"
	fi
}

usage() {
	sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

# Port must be a plain number: it names a directory and goes into URLs.
check_port() {
	if ! [[ "${1:-}" =~ ^[0-9]+$ ]] || [ "$1" -lt 1 ] || [ "$1" -gt 65535 ]; then
		die "invalid port: '${1:-}'"
	fi
}

# True when the process in pid file $1 is alive.
pid_alive() {
	local pid
	[ -f "$1" ] || return 1
	pid=$(cat "$1")
	[[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

# True when pid file $1 names a running `ollama serve`: a stale pid file whose
# number now belongs to another process must not get that process killed.
server_alive() {
	pid_alive "$1" || return 1
	case "$(ps -p "$(cat "$1")" -o args= 2>/dev/null)" in
	*ollama*serve*) return 0 ;;
	*) return 1 ;;
	esac
}

cmd_build() {
	# stdout carries only the two variable lines; everything else to stderr.
	exec 3>&1 1>&2

	# Go module zips drop vendor/, so llama.cpp's vendored headers are
	# missing; Debian packages the nlohmann and stb ones.
	local missing=()
	[ -f /usr/include/nlohmann/json_fwd.hpp ] || missing+=(nlohmann-json3-dev)
	[ -f /usr/include/stb/stb_image.h ] || missing+=(libstb-dev)
	if [ ${#missing[@]} -gt 0 ]; then
		log "installing Debian packages: ${missing[*]}"
		as_root apt-get update -qq
		as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi

	local bin="$OLLAMA_BIN_DEFAULT"
	if [ -x "$bin" ]; then
		log "ollama $OLLAMA_VERSION already built: $bin"
	else
		log "building ollama $OLLAMA_VERSION (CPU only; first run ~7 min on 2 cores, ~0.6 GB of Go build cache)"
		local bindir tmpbin
		bindir="$(dirname "$bin")"
		mkdir -p "$bindir"
		# Build under a temporary name, then rename: an interrupted build
		# never leaves a binary that would be taken as complete.
		tmpbin="$(mktemp -d "$bindir/.build.XXXXXX")"
		# shellcheck disable=SC2064 # expand now: tmpbin is local
		trap "rm -rf '$tmpbin'" EXIT
		# miniaudio is not packaged: scripts/ollama-build/miniaudio/miniaudio.h
		# is a stub that fails audio decoding (only used for multimodal audio
		# input); the code includes "miniaudio/miniaudio.h", hence the parent
		# folder on CGO_CPPFLAGS, for this build only.
		# The -X flag makes /api/version report the real version, not 0.0.0.
		GOBIN="$tmpbin" \
			CGO_ENABLED=1 \
			CGO_CPPFLAGS="-I$REPO_DIR/scripts/ollama-build ${CGO_CPPFLAGS:-}" \
			go install -ldflags "-X github.com/ollama/ollama/version.Version=${OLLAMA_VERSION#v}" \
			"github.com/ollama/ollama@$OLLAMA_VERSION"
		mv "$tmpbin/ollama" "$bin"
		rm -rf "$tmpbin"
		trap - EXIT
		log "built $bin"
	fi

	# Regenerated every time: it takes well under a second and follows the
	# generator in this repository.
	log "writing tiny model into $MODEL_DIR_DEFAULT"
	(cd "$REPO_DIR" && go run ./tools/tinymodel -out "$MODEL_DIR_DEFAULT")

	printf 'CF_TEST_OLLAMA_BIN=%s\nCF_TEST_OLLAMA_MODEL=%s\n' "$bin" "$MODEL_DIR_DEFAULT" >&3
}

cmd_start() {
	local port="${1:-}" parallel="${2:-1}"
	check_port "$port"
	[[ "$parallel" =~ ^[1-9][0-9]*$ ]] || die "invalid NUM_PARALLEL: '$parallel'"

	local bin="${CF_TEST_OLLAMA_BIN:-$OLLAMA_BIN_DEFAULT}"
	local model="${CF_TEST_OLLAMA_MODEL:-$MODEL_DIR_DEFAULT}"
	[ -x "$bin" ] || die "no ollama binary at $bin: run '$0 build' first"
	[ -f "$model/Modelfile" ] || die "no Modelfile in $model: run '$0 build' first"

	local dir="$SERVERS_DIR/$port"
	local pidfile="$dir/ollama.pid" logfile="$dir/ollama.log"
	if server_alive "$pidfile"; then
		die "a server is already running on port $port (pid $(cat "$pidfile")); stop it first"
	fi
	rm -f "$pidfile"
	mkdir -p "$dir/models" "$dir/home"

	local url="http://127.0.0.1:$port"
	# Something else answering on the port would pass the readiness check.
	if curl -fsS --max-time 2 "$url/api/version" >/dev/null 2>&1; then
		die "port $port already answers as an Ollama server not started here"
	fi

	log "starting ollama on 127.0.0.1:$port (NUM_PARALLEL=$parallel, log $logfile)"
	# setsid: its own session and process group, so it outlives this script
	# and `stop` can reach the runners it spawns through the group. The inner
	# shell writes its own pid, then execs: the pid file names ollama itself.
	# shellcheck disable=SC2016 # $$, $1 and $2 are the inner shell's
	OLLAMA_HOST="127.0.0.1:$port" \
		OLLAMA_MODELS="$dir/models" \
		HOME="$dir/home" \
		OLLAMA_NUM_PARALLEL="$parallel" \
		OLLAMA_KEEP_ALIVE="${OLLAMA_KEEP_ALIVE:-30m}" \
		setsid bash -c 'echo $$ >"$1"; exec "$2" serve' _ "$pidfile" "$bin" \
		</dev/null >"$logfile" 2>&1 &

	local deadline=$((SECONDS + START_TIMEOUT))
	until curl -fsS --max-time 2 "$url/api/version" >/dev/null 2>&1; do
		if [ -f "$pidfile" ] && ! pid_alive "$pidfile"; then
			tail -n 20 "$logfile" >&2 || true
			rm -f "$pidfile"
			die "ollama exited during start-up (log $logfile)"
		fi
		if [ "$SECONDS" -ge "$deadline" ]; then
			tail -n 20 "$logfile" >&2 || true
			stop_port "$port"
			die "ollama did not answer on $url within ${START_TIMEOUT}s"
		fi
		sleep 0.2
	done
	pid_alive "$pidfile" || die "server on $url is not the one started here (log $logfile)"

	# FROM ./tiny.gguf is relative to the Modelfile's directory.
	log "creating model $MODEL_NAME from $model"
	if ! (cd "$model" && OLLAMA_HOST="127.0.0.1:$port" HOME="$dir/home" \
		timeout "$CREATE_TIMEOUT" "$bin" create "$MODEL_NAME" -f Modelfile) >"$dir/create.log" 2>&1; then
		tail -n 20 "$dir/create.log" >&2 || true
		stop_port "$port"
		die "ollama create $MODEL_NAME failed (log $dir/create.log)"
	fi
	log "ready: $url (pid $(cat "$pidfile"), model $MODEL_NAME)"
}

# Stop the server on one port: TERM to ollama, which stops its runners (about
# 1 s), then KILL to its whole process group after STOP_TIMEOUT seconds.
stop_port() {
	local port="$1" pidfile="$SERVERS_DIR/$1/ollama.pid" pid
	if ! server_alive "$pidfile"; then
		rm -f "$pidfile"
		log "no server running on port $port"
		return 0
	fi
	pid=$(cat "$pidfile")
	log "stopping ollama on port $port (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || true
	local deadline=$((SECONDS + STOP_TIMEOUT))
	while kill -0 "$pid" 2>/dev/null; do
		if [ "$SECONDS" -ge "$deadline" ]; then
			log "still running after ${STOP_TIMEOUT}s; sending KILL"
			# Negative pid: the process group setsid made, whose id is
			# ollama's pid; it holds the runners too.
			kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
			break
		fi
		sleep 0.2
	done
	# A runner left behind (ollama killed, or it crashed) shares the group.
	kill -KILL -- "-$pid" 2>/dev/null || true
	rm -f "$pidfile"
}

cmd_stop() {
	check_port "${1:-}"
	stop_port "$1"
}

cmd_stop_all() {
	local pidfile
	[ -d "$SERVERS_DIR" ] || return 0
	for pidfile in "$SERVERS_DIR"/*/ollama.pid; do
		[ -e "$pidfile" ] || continue
		stop_port "$(basename "$(dirname "$pidfile")")"
	done
}

case "${1:-}" in
build) shift; cmd_build "$@" ;;
start) shift; cmd_start "$@" ;;
stop) shift; cmd_stop "$@" ;;
stop-all) shift; cmd_stop_all "$@" ;;
*) usage ;;
esac
