# llmrouter — `make run` starts the whole system; `make test` runs every test.
SHELL := /bin/bash
GO ?= go
BIN := bin/llmrouter
TOOLS := $(CURDIR)/bin/tools

# Pinned generator and linter versions: regenerating must be reproducible.
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
STATICCHECK_VERSION := v0.8.2
# Debian bookworm's protobuf-compiler.
PROTOC_VERSION := 3.21.12
FUZZTIME ?= 10s

.PHONY: all build test test-docs test-unit test-faults fuzz bench proto proto-check lint run clean tools

all: build

# The build's version and revision (llmrouter version, llmrouter_build_info).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
BUILDINFO := github.com/llmrouter/llmrouter/internal/buildinfo
LDFLAGS := -X $(BUILDINFO).Version=$(VERSION) -X $(BUILDINFO).Revision=$(REVISION)

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/llmrouter

test: build test-unit fuzz test-faults

# deploy/ is its own Go module (Kubernetes, Istio, Envoy Gateway and Prometheus
# types stay out of the product's dependencies); its tests check every file there.
test-unit:
	$(GO) test -count=1 -timeout 15m ./...
	cd deploy && $(GO) test -count=1 -timeout 15m ./...

# Issue 13's fleet-safety suite over real processes (integration/faults):
# faults injected under open-loop load; ends with "N passed, M failed". The
# build tag keeps it out of test-unit, so `make test` runs it once (about 3.5
# minutes on two busy cores).
test-faults: build
	LLMROUTER_BIN=$(CURDIR)/$(BIN) $(GO) test -tags faults -count=1 -timeout 12m -v ./integration/faults/

# Every shell command of docs/operating.md and deploy/README.md, run against
# `make run` with a token set (scripts/docs-commands.sh; CI runs it).
test-docs: build
	scripts/docs-commands.sh

# Every fuzz target runs for $(FUZZTIME) without a crash.
fuzz:
	scripts/fuzz.sh $(FUZZTIME)

# Go benchmarks, then the issue-7 experiment at full size (docs/benchmarks.md):
# round robin's unloaded TTFT (one conversation at a time), then every policy
# under 600 concurrent multi-turn conversations, 10 simulated minutes each;
# then a mixed fleet (three full-speed instances, two at half speed); the
# gateway's overhead; then the peer comparison suite (issue 17: eight workload
# classes under round-robin, least-request, prefix-cache and both peer rules,
# three seeds, 3 simulated minutes a run, one run at a time).
bench: build
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 1s ./...
	$(BIN) bench --mode sim --instances 5 --workload multi-turn --system-tokens 2048 --user-tokens 300 --output-tokens 200 \
		--seed 1 --duration 10m --concurrency 1 --policy round-robin,least-request,prefix-cache
	$(BIN) bench --mode sim --instances 5 --workload multi-turn --system-tokens 2048 --user-tokens 300 --output-tokens 200 \
		--seed 1 --duration 10m --concurrency 600 --ramp-up 20s \
		--policy round-robin,random,least-request,least-token,llm-metric-based,prefix-cache
	$(BIN) bench --mode sim --instance-speeds 1,1,1,0.5,0.5 --workload multi-turn --system-tokens 2048 --user-tokens 300 \
		--output-tokens 200 --seed 1 --duration 3m --concurrency 600 --ramp-up 20s \
		--policy round-robin,least-request,least-token,prefix-cache
	$(BIN) bench --mode overhead --instances 64 --rate 1000 --duration 10s --prompt-bytes 4096,262144
	$(BIN) bench --mode suite --seeds 1,2,3 --duration 3m

$(TOOLS)/protoc-gen-go:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)

$(TOOLS)/protoc-gen-go-grpc:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

$(TOOLS)/staticcheck:
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

tools: $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc $(TOOLS)/staticcheck

proto: $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc
	@protoc --version | grep -q "$(PROTOC_VERSION)" || { echo "make proto needs protoc $(PROTOC_VERSION) (Debian: apt-get install protobuf-compiler); found: $$(protoc --version 2>&1)"; exit 1; }
	PATH=$(TOOLS):$$PATH protoc -I api \
		--go_out=api --go_opt=paths=source_relative \
		--go-grpc_out=api --go-grpc_opt=paths=source_relative \
		api/llmrouter/v1/llmrouter.proto
	$(GO) test -count=1 -run TestAPIOnlyGainsFields ./api/llmrouter/v1/ -update

# Fails when the committed generated code differs from what `make proto` makes.
proto-check: proto
	@git diff --exit-code -- api/ || { echo "generated code in api/ is stale: run 'make proto' and commit"; exit 1; }

lint: $(TOOLS)/staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags faults ./integration/faults/
	cd deploy && $(GO) vet ./...
	$(TOOLS)/staticcheck ./...
	$(TOOLS)/staticcheck -tags faults ./integration/faults/

run: build
	@scripts/run.sh

clean:
	rm -rf bin
