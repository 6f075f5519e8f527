# syntax=docker/dockerfile:1
#
# docker build --build-arg VERSION="$(git describe --always --dirty)" -t reconciler .
# docker run -p 8080:8080 -v ledger-key:/keys:ro reconciler run --repo URL --key /keys/ledger.key
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# .dockerignore leaves .git out, so the version comes from this argument
# ('reconciler version' prints it) rather than from the VCS build info.
ARG VERSION=""
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false \
      -ldflags="-s -w -X main.version=${VERSION}" \
      -o /out/reconciler ./cmd/reconciler \
 && CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags="-s -w" \
      -o /out/reconciler-sandbox ./cmd/reconciler-sandbox

# git is needed at run time: go-git's file transport runs git-upload-pack and
# git-receive-pack, and exec agents often run sh, awk and sed.
FROM alpine:3.20
RUN apk add --no-cache git ca-certificates tzdata \
 && adduser -D -H -u 65532 reconciler \
 && install -d -o 65532 -g 65532 -m 0700 /var/cache/reconciler
# reconciler-sandbox next to it is the sandbox's helper: every exec agent's
# command starts through it, several times faster than through the
# reconciler itself.
COPY --from=build /out/reconciler /out/reconciler-sandbox /usr/local/bin/
# The daemon listens on every interface in the container, so that probes
# and Prometheus reach it through the published port; outside a container
# its default is loopback (127.0.0.1:8080). Set RECONCILER_LISTEN rather
# than --listen to move it: the HEALTHCHECK reads the same variable. The
# mirror and the ledger's saved fold go to the cache directory, writable by
# the non-root user (mount a volume there to keep it across restarts).
ENV RECONCILER_LISTEN=:8080 \
    XDG_CACHE_HOME=/var/cache/reconciler
EXPOSE 8080
USER 65532:65532
# The binary is its own probe: the image has no curl. 'healthcheck' asks
# /healthz (the process serves); Kubernetes probes /healthz and /readyz
# over HTTP instead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/reconciler", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/reconciler"]
CMD ["run", "--help"]
