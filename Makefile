# reconciler: GitOps control plane for AI agents.
GO        ?= go
BIN       ?= bin/reconciler
PKGS      ?= ./...
STATICCHECK_VERSION ?= v0.8.2
# VERSION is what 'reconciler version' prints (empty: the module version
# from the build info). BUILDVCS=auto records the revision, its time and
# whether the tree was modified (go env may default it to false).
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null)
BUILDVCS  ?= auto

.PHONY: help build demo demo-gitea test check bench fuzz clean

help: ## show the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build bin/reconciler and its sandbox helper bin/reconciler-sandbox (static)
	CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=$(BUILDVCS) -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/reconciler
	CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=$(BUILDVCS) -o $(dir $(BIN))reconciler-sandbox ./cmd/reconciler-sandbox

demo: build ## run the embedded example end to end in a temporary directory
	./$(BIN) demo

demo-gitea: ## the example with pull requests on a real Gitea (built once by .ci/gitea, about 8 minutes)
	RECONCILER_GITEA="$$(bash .ci/gitea)" RECONCILER_DEMO=1 $(GO) test -count=1 -run '^TestGiteaDemo$$' -v ./forge | grep -v '^=== RUN\|^--- \|^PASS$$\|^ok '

test: ## run every test (unit, end-to-end over a local path and smart HTTP, CLI scripts)
	$(GO) test -count=1 -timeout 20m $(PKGS)

check: ## vet, gofmt and staticcheck
	$(GO) vet $(PKGS)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) $(PKGS)

bench: ## run the benchmarks
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

clean: ## remove build output
	rm -rf bin
