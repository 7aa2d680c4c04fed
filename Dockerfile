# syntax=docker/dockerfile:1
#
# creditgate's image, for hosts with a container engine: one image, both
# binaries, webhook as the entrypoint (docs/image.md). Where there is no engine
# (CI, the local cluster) the same image is assembled by hack/tools/image:
#
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) -t creditgate:dev .
#
# Keep the two in step: user 65532, /usr/local/bin/{webhook,reconciler},
# ENTRYPOINT webhook, the OCI labels.

ARG GO_VERSION=1.26

# Build on the builder's own platform and cross-compile: CGO is off, so the
# binaries are static and need nothing from the base image but CA certificates.
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH:-amd64} \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/ ./cmd/webhook ./cmd/reconciler

# distroless static: CA certificates, tzdata, /etc/passwd with nonroot
# (65532), no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.source="https://github.com/creditgate/creditgate" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.title="creditgate"
COPY --from=build /out/webhook /out/reconciler /usr/local/bin/
USER 65532:65532
WORKDIR /
# HTTP_ADDR (webhook, /healthz, /readyz) and METRICS_ADDR (/metrics).
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/webhook"]
