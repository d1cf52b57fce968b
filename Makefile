# Orchestra driver plugins. `make run` and `make test` are the front door.
SHELL := /bin/bash
BIN := $(CURDIR)/bin
GO ?= go
PLUGINS := native docker qemu k8s
MODULES := . plugins/docker plugins/qemu plugins/k8s
PROTO := proto/driverv1/driver.proto

.PHONY: all deps build run test test-go compat-fixture test-stress fuzz template-check images proto proto-check lint bench clean cluster cluster-down

all: build

## build: every binary into bin/
build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/orchestra ./cmd/orchestra
	$(GO) build -o $(BIN)/pocketci-driver-native ./plugins/native/cmd/pocketci-driver-native
	cd plugins/docker && $(GO) build -o $(BIN)/pocketci-driver-docker ./cmd/pocketci-driver-docker
	cd plugins/qemu && $(GO) build -o $(BIN)/pocketci-driver-qemu ./cmd/pocketci-driver-qemu
	cd plugins/k8s && $(GO) build -o $(BIN)/pocketci-driver-k8s ./cmd/pocketci-driver-k8s

## run: build the CLI and the native plugin only, then run a sample task through the plugin process
run:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/orchestra ./cmd/orchestra
	$(GO) build -o $(BIN)/pocketci-driver-native ./plugins/native/cmd/pocketci-driver-native
	$(BIN)/orchestra run --driver native -e GREETING=hello -- sh -c 'echo "$$GREETING from pid $$$$, a child of $$(readlink /proc/$$PPID/exe)"'

## deps: the Debian packages the tests need (installed as root, else the command is printed)
deps:
	bash scripts/deps.sh

## images: offline test images (busybox for docker, the qemu guest)
images: deps
	bash plugins/docker/scripts/busybox-image.sh
	bash plugins/qemu/guest/build.sh

## test: everything the tests need, then every module's tests with -race,
## a short run of every fuzz target, and the third-party template check
test: deps build images cluster proto-check lint test-go fuzz template-check

# The k8s plugin's tests (and drivers_test's k8s run) use the test cluster's kubeconfig.
test-go: export KUBECONFIG ?= $(CLUSTER_KUBECONFIG)
test-go: compat-fixture
	@set -e; for m in $(MODULES); do echo "== go test $$m"; (cd $$m && $(GO) test -race -short -count=1 -timeout 40m ./...); done

## compat-fixture: the native plugin as released with SDK 0.1 (protocol 1.3),
## built from git commit $(COMPAT_COMMIT) into bin/compat, for host/compat13_test.go
## (a release built against the old SDK must keep serving under this host).
## Built once: delete bin/compat to rebuild.
COMPAT_COMMIT := 1782cda
compat-fixture:
	@set -e; out=$(BIN)/compat/pocketci-driver-native; \
	if [ -x "$$out" ]; then exit 0; fi; \
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	git archive $(COMPAT_COMMIT) | tar -x -C "$$tmp"; \
	mkdir -p $(BIN)/compat; \
	echo "building $$out from $(COMPAT_COMMIT)"; \
	(cd "$$tmp" && $(GO) build -buildvcs=false -o "$$out.tmp" ./plugins/native/cmd/pocketci-driver-native); \
	mv "$$out.tmp" "$$out"

## test-stress: the heavy load tests (200 concurrent tasks, 1 GiB of stdin and logs)
test-stress: build
	$(GO) test -race -count=1 -timeout 20m -run Stress -v ./host

## fuzz: each fuzz target for FUZZTIME (seeds are in the tests)
FUZZTIME ?= 10s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzValidateTask$$' -fuzztime $(FUZZTIME) ./orchestra
	$(GO) test -run '^$$' -fuzz '^FuzzValidateNamespace$$' -fuzztime $(FUZZTIME) ./orchestra
	$(GO) test -run '^$$' -fuzz '^FuzzSafeName$$' -fuzztime $(FUZZTIME) ./orchestra
	$(GO) test -run '^$$' -fuzz '^FuzzExtract$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 2s ./orchestra/volumetar
	$(GO) test -run '^$$' -fuzz '^FuzzCheck$$' -fuzztime $(FUZZTIME) ./orchestra/volumetar
	$(GO) test -run '^$$' -fuzz '^FuzzClientReplies$$' -fuzztime $(FUZZTIME) ./internal/wire
	cd plugins/docker && $(GO) test -run '^$$' -fuzz '^FuzzDockerName$$' -fuzztime $(FUZZTIME) .
	cd plugins/qemu && $(GO) test -run '^$$' -fuzz '^FuzzTaskNames$$' -fuzztime $(FUZZTIME) .

## template-check: a copy of examples/driver-template, built on its own, passes conformance
template-check: build
	bash scripts/template-check.sh

## proto: regenerate the wire code with the pinned protoc plugins and a
## Go-built compiler (tools/protoc-lite): no system protoc needed
proto:
	@mkdir -p $(BIN)/tools
	cd tools && GOWORK=off $(GO) build -o $(BIN)/tools/ google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc ./protoc-lite
	$(BIN)/tools/protoc-lite -I . -plugin go=$(BIN)/tools/protoc-gen-go -plugin go-grpc=$(BIN)/tools/protoc-gen-go-grpc \
		-opt go=paths=source_relative -opt go-grpc=paths=source_relative -out . $(PROTO)

## proto-check: fail when the committed generated code is stale
proto-check: proto
	@git diff --exit-code -- pluginsdk/proto || { echo "generated protobuf code is stale: run make proto and commit" >&2; exit 1; }

## lint: go vet and gofmt on every module
lint:
	@set -e; for m in $(MODULES); do (cd $$m && $(GO) vet ./...); done
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:" >&2; echo "$$out" >&2; exit 1; fi

## cluster: start the offline single-node Kubernetes test cluster (idempotent; builds and
## caches its binaries on first use); prints its kubeconfig's path last
CLUSTER_KUBECONFIG := $(or $(POCKETCI_CLUSTER_DIR),/var/lib/pocketci-k8s)/admin.kubeconfig
cluster:
	bash plugins/k8s/cluster/up.sh

## cluster-down: stop the test cluster and remove every trace of it
cluster-down:
	bash plugins/k8s/cluster/down.sh

## bench: the plugin-boundary benchmarks
bench: export KUBECONFIG ?= $(CLUSTER_KUBECONFIG)
bench: build images cluster
	bash scripts/bench.sh

clean:
	rm -rf $(BIN)
