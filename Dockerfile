# syntax=docker/dockerfile:1
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/reconciler ./cmd/reconciler

# git is needed at run time: go-git's file transport runs git-upload-pack and
# git-receive-pack, and exec agents often run sh, awk and sed.
FROM alpine:3.20
RUN apk add --no-cache git ca-certificates tzdata \
 && adduser -D -H -u 65532 reconciler
COPY --from=build /out/reconciler /usr/local/bin/reconciler
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/reconciler"]
CMD ["run", "--help"]
