# syntax=docker/dockerfile:1
# Build stage: cgo stays on because the GPU collector (NVML) dlopens
# libnvidia-ml.so.1 at run time; the runtime image therefore needs glibc.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG REVISION=unknown
RUN CGO_ENABLED=1 go build -trimpath \
      -ldflags "-s -w -X github.com/prometheus/common/version.Version=${VERSION} -X github.com/prometheus/common/version.Revision=${REVISION}" \
      -o /out/chimeraforge ./cmd/chimeraforge

# Runtime: distroless glibc, non-root.
FROM gcr.io/distroless/base-debian12:nonroot
COPY --from=build /out/chimeraforge /usr/local/bin/chimeraforge
USER nonroot:nonroot
EXPOSE 9477
ENTRYPOINT ["/usr/local/bin/chimeraforge"]
CMD ["run"]
