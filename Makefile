# warden — see README.md.
GO        ?= go
BIN       := bin
# Tool locations (promtool, prometheus, alertmanager, amtool, staticcheck,
# kustomize, KUBEBUILDER_ASSETS for etcd + kube-apiserver), built once and cached.
TOOLS_ENV := eval "$$(scripts/tools.sh env)"
TEST_FLAGS ?= -count=1 -timeout 40m

.PHONY: all build test test-short rules-test rules-mutate dashboards-test e2e lint tools deps run demo bench clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

deps:
	scripts/install-deps.sh

# tools builds the real servers the tests use (first time about 25 min on
# 2 cores, mostly kube-apiserver; then cached; progress is printed).
tools:
	scripts/tools.sh all

# test runs everything: unit, real-server, rules, dashboards and end-to-end
# tests. Nothing is skipped: never add -short here (CI runs this target).
test: deps tools
	$(TOOLS_ENV) && $(GO) test $(TEST_FLAGS) ./...

# test-short is the fast loop: the pure unit tests only, in seconds. Tests
# that need a real server (PostgreSQL, Redis, Prometheus, Alertmanager,
# kube-apiserver) skip themselves under -short.
test-short:
	$(TOOLS_ENV) && $(GO) test -count=1 -short ./...

rules-test: tools
	$(TOOLS_ENV) && $(GO) test $(TEST_FLAGS) ./rules/... ./internal/inventory/...

# rules-mutate changes one threshold, window, matcher, guard, aggregation,
# `for` or label of one rule at a time and fails on every mutant the promtool
# tests do not kill, unless rules/mutate/equivalent.yml lists it with its
# reason. `make test` runs it too: it is a test in ./rules/mutate.
rules-mutate: tools
	$(TOOLS_ENV) && $(GO) test $(TEST_FLAGS) -run TestEveryNonEquivalentMutantIsKilled -v ./rules/mutate/

dashboards-test:
	$(GO) test $(TEST_FLAGS) ./dashboards/...

e2e: deps tools
	$(TOOLS_ENV) && $(GO) test $(TEST_FLAGS) -v ./test/e2e/...

lint: tools
	$(GO) vet ./...
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(TOOLS_ENV) && $$STATICCHECK ./...

# run starts the exporter against the PostgreSQL and Redis on this machine's
# standard ports (127.0.0.1:5432, 127.0.0.1:6379).
run: build
	$(BIN)/warden-exporter --config.file=deploy/examples/warden-exporter.local.yml --web.listen-address=127.0.0.1:10187

# demo starts the whole loop on loopback and plays the scenario (see README).
demo: deps tools
	$(TOOLS_ENV) && $(GO) run ./cmd/warden-demo

bench: deps tools
	$(TOOLS_ENV) && $(GO) test -run '^$$' -bench . -benchmem ./...

clean:
	rm -rf $(BIN)
