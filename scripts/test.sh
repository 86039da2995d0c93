#!/usr/bin/env bash
# The whole test suite: the README's test command, and what .ci/run calls.
# It installs what the tests need on a fresh Debian machine (promtool from
# Debian's prometheus package; a pinned Ollama built from the Go module proxy
# and a tiny generated model, see scripts/ollama-test-server.sh; golangci-lint
# and kustomize built from the proxy), all cached outside the repository, then runs
# formatting, vet, lint and `go test -race ./...`, a bounded run of each fuzz target,
# and govulncheck against a vulnerability database built from the module proxy (no
# other network). Plain `go test ./...` works anywhere without this
# script: tests that need a tool it installs skip with a message saying so.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Go toolchain the suite builds and tests with: go1.26.8 (this
# machine's) has standard-library vulnerabilities that govulncheck finds in
# code the daemon calls (net/http, crypto/tls, crypto/x509, ...), fixed in
# go1.26.10. The go command fetches it once from the module proxy. The
# Dockerfile's GO_IMAGE is the same release.
export GOTOOLCHAIN=go1.26.10

GOLANGCI_LINT_VERSION=v2.15.0
KUSTOMIZE_VERSION=v5.7.1
GOVULNCHECK_VERSION=v1.9.0
# The Go vulnerability database as of this golang.org/x/vulndb commit (its
# pseudo-version carries the date); docs/reliability.md says how to move it.
VULNDB_VERSION=v0.0.0-20261105234957-e22db6528018
# Each fuzz target runs this long on top of its seed corpus.
FUZZ_TIME=${CF_FUZZ_TIME:-20s}
CACHE_DIR="${CF_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/chimeraforge}"

as_root() {
	if [ "$(id -u)" = 0 ]; then "$@"
	elif command -v sudo >/dev/null; then sudo "$@"
	else echo "test.sh: need root (or sudo) to run: $*" >&2; return 1
	fi
}

step() { printf '\n== %s\n' "$*"; }

step "prerequisites"
missing=()
command -v promtool >/dev/null || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
	echo "installing Debian packages: ${missing[*]}"
	as_root apt-get update -qq
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
promtool --version 2>&1 | head -n 1

# A real, CPU-only Ollama at the pinned version and a tiny generated model,
# for the real-Ollama suite (cached: minutes the first time, a second after).
eval "$(scripts/ollama-test-server.sh build)"
export CF_TEST_OLLAMA_BIN CF_TEST_OLLAMA_MODEL
"$CF_TEST_OLLAMA_BIN" --version 2>&1 | tail -n 1

# goTool NAME PACKAGE VERSION builds a pinned Go tool from the module proxy
# into the cache once and sets $tool to its path.
goTool() {
	tool="$CACHE_DIR/bin/$1-$3"
	if [ ! -x "$tool" ]; then
		echo "building $1 $3 (first run only)"
		mkdir -p "$CACHE_DIR/bin"
		GOBIN="$CACHE_DIR/gobin" go install "$2@$3"
		mv "$CACHE_DIR/gobin/$1" "$tool"
	fi
}

goTool golangci-lint github.com/golangci/golangci-lint/v2/cmd/golangci-lint "$GOLANGCI_LINT_VERSION"
lint=$tool
# kustomize builds the Kubernetes manifests in deploy/kubernetes for their
# tests (no cluster needed).
goTool kustomize sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION"
export CF_TEST_KUSTOMIZE_BIN="$tool"
goTool govulncheck golang.org/x/vuln/cmd/govulncheck "$GOVULNCHECK_VERSION"
govulncheck=$tool

# govulncheck's database in its v1 file layout, built from the OSV entries
# of the pinned golang.org/x/vulndb module (tools/vulndb): the module proxy
# is all the network CI has.
vulndb="$CACHE_DIR/vulndb-$VULNDB_VERSION"
if [ ! -f "$vulndb/index/db.json" ]; then
	echo "building the vulnerability database $VULNDB_VERSION (first run only)"
	# Downloaded from outside the module, so that go.sum is not touched.
	vulndb_src=$(cd "$CACHE_DIR" && go mod download -json "golang.org/x/vulndb@$VULNDB_VERSION" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
	[ -d "$vulndb_src/data/osv" ] || { echo "golang.org/x/vulndb@$VULNDB_VERSION: no data/osv in '$vulndb_src'"; exit 1; }
	go run ./tools/vulndb build -src "$vulndb_src/data/osv" -version "$VULNDB_VERSION" -out "$vulndb"
fi

step "gofmt"
unformatted=$(git ls-files -z '*.go' | xargs -0 gofmt -l)
if [ -n "$unformatted" ]; then
	echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

step "go vet"
go vet ./...

step "golangci-lint"
"$lint" run ./...

step "go test -race"
# Tests that need an installed tool fail instead of skipping when it is
# missing here: a skip would hide a broken install step. (Not CHIMERAFORGE_*:
# every variable with that prefix is read as a configuration key.)
export CF_TEST_REQUIRE_TOOLS=1
# One package at a time: the efficiency tests compare a solo baseline with a
# concurrent run on the same CPUs, and another package's tests (promtool,
# builds, simulators) running beside one of the two skews the comparison.
go test -race -p 1 ./...

step "fuzz ($FUZZ_TIME each)"
# Beyond the seeds and testdata/fuzz regressions that `go test` ran above.
# A failing input is written to PACKAGE/testdata/fuzz/TARGET/: fix the bug
# and keep the file as a regression seed. Minimizing each new input is
# bounded too, or one slow minimization eats the run.
go test -run '^$' -fuzz '^FuzzLoadBytes$' -fuzztime "$FUZZ_TIME" -fuzzminimizetime 5s ./config/
go test -run '^$' -fuzz '^FuzzStream$' -fuzztime "$FUZZ_TIME" -fuzzminimizetime 5s ./daemon/

step "govulncheck $GOVULNCHECK_VERSION (offline, vulndb $VULNDB_VERSION)"
# Fails on a vulnerability that the code calls unless tools/vulndb/accepted.txt
# lists it and no fix exists; lists the others (imported, required).
"$govulncheck" -db "file://$vulndb" -format json ./... | go run ./tools/vulndb check -accept tools/vulndb/accepted.txt
