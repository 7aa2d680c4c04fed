# creditgate developer entry points. `make dev` runs the service for real on a
# local PostgreSQL; `make test` runs every test (it starts its own PostgreSQL
# and builds the pinned helm/promtool it needs into ~/.cache/creditgate).
SHELL := /bin/bash
GO ?= go
export PATH := /usr/local/go/bin:$(PATH)

.PHONY: generate dev dev-reset test test-go test-pgbouncer test-chart vet fmt-check lint golangci-lint shellcheck actionlint build image image-push fuzz bench bench-signups bench-api e2e e2e-kind chart-check cluster-up cluster-down

# make dev's state (cluster, logs, signing secret, binaries); it ignores itself
# in git. DEV_PG_PORT, HTTP_ADDR, METRICS_ADDR and API_ADDR choose its ports.
DEV_DIR ?= .dev
export DEV_DIR


# Build first, then exec the built binary, so that make's signals reach dev
# itself (make passes SIGTERM to its recipe; `go run` would sit in between).
dev:
	@mkdir -p $(DEV_DIR) && echo '*' >$(DEV_DIR)/.gitignore
	$(GO) build -o $(DEV_DIR)/bin/ ./hack/dev ./cmd/webhook
	exec $(DEV_DIR)/bin/dev

# Stop a running `make dev` and delete its state, database included.
dev-reset:
	$(GO) run ./hack/dev reset

# Each step in turn, then one line: all green and how long, or which failed.
TEST_STEPS := fmt-check vet test-go test-pgbouncer test-chart
test:
	@start=$$SECONDS; took() { d=$$((SECONDS - start)); printf '%dm%02ds' $$((d / 60)) $$((d % 60)); }; \
	for step in $(TEST_STEPS); do \
	  if ! $(MAKE) --no-print-directory $$step; then \
	    echo "make test: FAILED in make $$step after $$(took)"; exit 1; \
	  fi; \
	done; \
	echo "make test: all green in $$(took) ($(TEST_STEPS))"

test-go:
	$(GO) test -race -count=1 -shuffle=on ./...
	cd hack/tools && $(GO) test -count=1 ./...

# The delivery path's and the credits API's tests again, through a real
# PgBouncer in transaction mode (started by the tests; statements sent with
# pgx's exec mode, as PgBouncer before 1.21 needs). Without pgbouncer
# installed it says so and passes, unless REQUIRE_PGBOUNCER=1 (CI).
PGBOUNCER_PKGS := ./pkg/postgres/... ./pkg/webhook/... ./pkg/creditsapi/... ./pkg/reconcile/... ./cmd/webhook/... ./cmd/reconciler/...
test-pgbouncer:
	@if ! command -v pgbouncer >/dev/null && [ ! -x /usr/sbin/pgbouncer ] && [ -z "$$PGBOUNCER" ]; then \
	  if [ "$(REQUIRE_PGBOUNCER)" = 1 ]; then echo "test-pgbouncer: no pgbouncer (apt-get install pgbouncer)"; exit 1; fi; \
	  echo "test-pgbouncer: SKIPPED, pgbouncer is not installed (apt-get install pgbouncer)"; exit 0; \
	fi; \
	TEST_PGBOUNCER=exec $(GO) test -count=1 $(PGBOUNCER_PKGS)

# Chart lint/render/schema/alert tests (e2e/chart, its own Go module).
test-chart:
	bin=$$(bash hack/tools.sh) && export PATH="$$bin:$$PATH" && cd e2e && $(GO) test -count=1 ./chart/...

vet:
	$(GO) vet ./...
	cd e2e && $(GO) vet ./... && $(GO) vet -tags e2e .
	cd hack/tools && $(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# golangci-lint (pinned, built once by hack/tools.sh; .golangci.yml holds the
# linters and the depguard rules that keep the layers apart) on the three Go
# modules, shellcheck on the shell glue, actionlint on the workflows, tidy
# go.mod files.
lint: fmt-check vet actionlint golangci-lint shellcheck
	$(GO) mod tidy -diff
	cd e2e && $(GO) mod tidy -diff
	cd hack/tools && $(GO) mod tidy -diff

golangci-lint:
	@bin=$$(bash hack/tools.sh golangci-lint) && \
	for mod in . e2e hack/tools; do \
	  echo "golangci-lint: $$mod"; (cd $$mod && $$bin/golangci-lint run --allow-parallel-runners ./...) || exit 1; \
	done

shellcheck:
	@command -v shellcheck >/dev/null || { echo "shellcheck: not installed (apt-get install shellcheck)"; exit 1; }
	shellcheck -x hack/*.sh hack/cluster/*.sh .ci/run

# The GitHub Actions workflows (.github/workflows), with actionlint built from
# the Go module proxy: about a minute of CPU cold, under a second warm. It runs
# shellcheck on `run:` scripts when shellcheck is on PATH.
ACTIONLINT_VERSION ?= v1.7.12
actionlint:
	$(GO) run github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION)

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o /tmp/creditgate/ ./cmd/...

# The container image, built without Docker (see docs/image.md): IMAGE names
# it (default creditgate:dev, for a local cluster), IMAGE_ARCH is its one
# platform. `make image-push IMAGE=<registry>/creditgate:<tag>` also pushes it
# with crane, using `crane auth login` / `docker login` credentials; then
# install with --set image.repository=<registry>/creditgate --set image.tag=<tag>.
IMAGE ?= creditgate:dev
IMAGE_ARCH ?= amd64
IMAGE_TAR ?= $(or $(CREDITGATE_CACHE),$(HOME)/.cache/creditgate)/images/creditgate.tar
# go-containerregistry's crane, the version hack/tools/go.mod pins.
CRANE_VERSION ?= v0.22.1
image:
	cd hack/tools && $(GO) run ./image -tag '$(IMAGE)' -arch '$(IMAGE_ARCH)' -out '$(IMAGE_TAR)'

image-push: image
	$(GO) run github.com/google/go-containerregistry/cmd/crane@$(CRANE_VERSION) push '$(IMAGE_TAR)' '$(IMAGE)'

# Coverage-guided fuzzing, FUZZTIME (default 60s) per target: the whole
# delivery path against a real PostgreSQL, the event decoder, and the Svix
# verifier against svix-webhooks. Their seed corpora run in `make test`.
# -fuzzminimizetime is bounded because the delivery path's coverage is not
# exactly repeatable (database and pool goroutines): unbounded, minimizing one
# new input could take a minute with nothing fuzzed meanwhile.
FUZZTIME ?= 60s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDelivery$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 10x ./pkg/webhook/
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./pkg/clerk/
	$(GO) test -run '^$$' -fuzz '^FuzzVerifyAgreesWithSvix$$' -fuzztime $(FUZZTIME) -parallel 1 ./pkg/webhook/

# Regenerate the credits API's server, client and served JSON from
# api/openapi.yaml (oapi-codegen at a pinned version, from the module proxy).
generate:
	$(GO) generate ./pkg/creditsapi/

# The benchmarks of docs/benchmarks.md (hack/bench: PostgreSQL through
# pglocal, pgbench on the SQL the store sends, the kit's sender, CPU and RSS
# from /proc): the webhook's new users, then the credits API's debits.
# BENCH_OUT_DIR=dir keeps the reports, logs and scripts.
bench: bench-signups bench-api

bench-signups:
	$(GO) run ./hack/bench -scenario signups

bench-api:
	$(GO) run ./hack/bench -scenario debits

# e2e on a from-source single-node Kubernetes (no Docker needed; see docs/e2e.md).
e2e:
	bash hack/e2e.sh

# e2e on kind (needs Docker, kind, kubectl).
e2e-kind:
	bash hack/e2e-kind.sh

# helm lint + template, and a server-side dry-run when KUBECONFIG is set.
chart-check:
	bash hack/chart-check.sh

cluster-up:
	bash hack/cluster/build.sh && bash hack/cluster/up.sh

cluster-down:
	bash hack/cluster/down.sh
