# syntax=docker/dockerfile:1
#
# The chimeraforge daemon image.
#
#   docker build -t chimeraforge:dev .
#   docker run --rm -p 9477:9477 \
#     -v "$PWD/lab.yaml:/etc/chimeraforge/config.yaml:ro" chimeraforge:dev
#   docker run --rm -p 9477:9477 chimeraforge:dev run    # the built-in demo
#
# Configuration: mount it at /etc/chimeraforge/config.yaml (a file, or a
# directory at /etc/chimeraforge holding config.yaml and any `file:` secrets
# it names). The image holds no configuration: started without one, the
# daemon exits at once naming the missing file, rather than measuring a demo
# nobody asked for. `run` without --config (as above) runs the built-in demo.
#
# Release builds pass the version and make the build reproducible:
#
#   docker build \
#     --build-arg VERSION=1.2.3 --build-arg REVISION="$(git rev-parse HEAD)" \
#     --build-arg SOURCE_DATE_EPOCH="$(git log -1 --format=%ct)" -t chimeraforge:1.2.3 .
#
# The binary is then the same for the same sources: -trimpath, no VCS stamp
# (-buildvcs=false; .git is not in the build context) and a build date taken
# from SOURCE_DATE_EPOCH, never from the clock. BuildKit also reads
# SOURCE_DATE_EPOCH for the image's own timestamps (with the exporter option
# rewrite-timestamp=true, for the layers too).
#
# Base images are pinned to version tags here. CI pins them by digest too,
# passing GO_IMAGE and RUNTIME_IMAGE as build args (`image:tag@sha256:…`,
# the digest from `docker buildx imagetools inspect image:tag`) and updating
# them by pull request, so that a rebuild of a tag gets the same bits.
# The two must agree on Debian: the binary links glibc dynamically (cgo), so
# it is built on bookworm for distroless' debian12 (both glibc 2.36).
ARG GO_IMAGE=golang:1.26.10-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/base-debian12:nonroot

FROM ${GO_IMAGE} AS build
WORKDIR /src
# cgo stays on: the GPU collector (github.com/NVIDIA/go-nvml) dlopens
# libnvidia-ml.so.1 at run time, which needs a glibc binary. GOTOOLCHAIN=local:
# build with this image's Go, never a downloaded one.
ENV CGO_ENABLED=1 GOTOOLCHAIN=local GOFLAGS=-mod=readonly
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
ARG REVISION=
ARG BRANCH=
ARG SOURCE_DATE_EPOCH
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    set -eu; \
    build_date=""; \
    if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then build_date="$(date -u -d "@${SOURCE_DATE_EPOCH}" +%Y%m%d-%H:%M:%S)"; fi; \
    pkg=github.com/prometheus/common/version; \
    go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X ${pkg}.Version=${VERSION} -X ${pkg}.Revision=${REVISION} -X ${pkg}.Branch=${BRANCH} -X ${pkg}.BuildDate=${build_date}" \
      -o /out/chimeraforge ./cmd/chimeraforge; \
    /out/chimeraforge version

# Runtime: distroless with glibc (base, not static: cgo), no shell, non-root.
FROM ${RUNTIME_IMAGE}
ARG VERSION=dev
ARG REVISION=
LABEL org.opencontainers.image.title="chimeraforge" \
      org.opencontainers.image.description="Prometheus-native load generator driving LLM agent workloads against Ollama servers" \
      org.opencontainers.image.source="https://github.com/chimeraforge/chimeraforge" \
      org.opencontainers.image.documentation="https://github.com/chimeraforge/chimeraforge/blob/main/README.md" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# GPU metrics (NVML) need nothing in the image: with the NVIDIA Container
# Toolkit, `docker run --gpus all` (or a compose device reservation) sets
# NVIDIA_VISIBLE_DEVICES and mounts the host driver's libnvidia-ml.so.1 (into
# /usr/lib/x86_64-linux-gnu, which Debian's ld.so searches even without an
# ld.so.cache) and /dev/nvidia* into the container. NVML needs only the
# "utility" driver capability, not "compute". Without a GPU the collector
# logs one line and exports chimeraforge_gpu_collector_up 0. Per-process GPU
# memory is not attributed to targets from a container: another PID namespace.
ENV NVIDIA_DRIVER_CAPABILITIES=utility
COPY --from=build /out/chimeraforge /usr/local/bin/chimeraforge
# distroless' nonroot user, by number so that runAsNonRoot can check it.
USER 65532:65532
EXPOSE 9477
# /healthz: the process serves. Not /readyz, which waits on the Ollama
# targets: a target down must not mark the daemon unhealthy (it is what the
# daemon is there to measure). The probe's own timeout is 3s.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["/usr/local/bin/chimeraforge", "health"]
ENTRYPOINT ["/usr/local/bin/chimeraforge"]
CMD ["run", "--config=/etc/chimeraforge/config.yaml"]
