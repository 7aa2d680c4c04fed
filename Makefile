# creditgate developer entry points. `make dev` runs the service for real on a
# local PostgreSQL; `make test` runs every test (it starts its own PostgreSQL).
SHELL := /bin/bash
GO ?= go

.PHONY: dev test vet fmt-check lint build fuzz bench

dev:
	$(GO) run ./hack/dev

test: fmt-check vet
	$(GO) test -race -count=1 ./...

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

lint: fmt-check vet
	$(GO) mod tidy -diff

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o /tmp/creditgate/ ./cmd/...

# Coverage-guided fuzzing of the Clerk event decoder (the seed corpus also
# runs in `make test`).
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecode -fuzztime $${FUZZTIME:-60s} ./pkg/clerk/

bench:
	bash hack/bench.sh
