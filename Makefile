# Orchestra driver plugins. `make run` and `make test` are the front door.
SHELL := /bin/bash
BIN := $(CURDIR)/bin
GO ?= go
PLUGINS := native docker qemu
MODULES := . plugins/docker plugins/qemu
PROTO := pluginsdk/proto/driverv1/driver.proto

.PHONY: all build run test test-go test-stress fuzz template-check images proto proto-check lint bench clean

all: build

## build: every binary into bin/
build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/orchestra ./cmd/orchestra
	$(GO) build -o $(BIN)/pocketci-driver-native ./plugins/native/cmd/pocketci-driver-native
	cd plugins/docker && $(GO) build -o $(BIN)/pocketci-driver-docker ./cmd/pocketci-driver-docker
	cd plugins/qemu && $(GO) build -o $(BIN)/pocketci-driver-qemu ./cmd/pocketci-driver-qemu

## run: build, then run a sample task through the native plugin process
run: build
	$(BIN)/orchestra run --driver native -e GREETING=hello -- sh -c 'echo "$$GREETING from pid $$$$, a child of $$(readlink /proc/$$PPID/exe)"'

## images: offline test images (busybox for docker, the qemu guest)
images:
	bash plugins/docker/scripts/busybox-image.sh
	bash plugins/qemu/guest/build.sh

## test: everything the tests need, then every module's tests with -race,
## a short run of every fuzz target, and the third-party template check
test: build images proto-check lint test-go fuzz template-check

test-go:
	@set -e; for m in $(MODULES); do echo "== go test $$m"; (cd $$m && $(GO) test -race -short -count=1 -timeout 40m ./...); done

## test-stress: the heavy load tests (200 concurrent tasks, 1 GiB of stdin and logs)
test-stress: build
	$(GO) test -race -count=1 -timeout 20m -run Stress -v ./host

## fuzz: each fuzz target for FUZZTIME (seeds are in the tests)
FUZZTIME ?= 10s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzValidateTask$$' -fuzztime $(FUZZTIME) ./orchestra
	$(GO) test -run '^$$' -fuzz '^FuzzValidateNamespace$$' -fuzztime $(FUZZTIME) ./orchestra
	$(GO) test -run '^$$' -fuzz '^FuzzSafeName$$' -fuzztime $(FUZZTIME) ./orchestra
	$(GO) test -run '^$$' -fuzz '^FuzzSanitize$$' -fuzztime $(FUZZTIME) ./plugins/native
	$(GO) test -run '^$$' -fuzz '^FuzzClientReplies$$' -fuzztime $(FUZZTIME) ./internal/wire
	cd plugins/docker && $(GO) test -run '^$$' -fuzz '^FuzzDockerName$$' -fuzztime $(FUZZTIME) .
	cd plugins/qemu && $(GO) test -run '^$$' -fuzz '^FuzzSanitize$$' -fuzztime $(FUZZTIME) .

## template-check: a copy of examples/driver-template, built on its own, passes conformance
template-check: build
	bash scripts/template-check.sh

## proto: regenerate the wire code with the pinned protoc plugins
proto:
	@mkdir -p $(BIN)/tools
	cd tools && GOWORK=off $(GO) build -o $(BIN)/tools/ google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc
	protoc --plugin=protoc-gen-go=$(BIN)/tools/protoc-gen-go --plugin=protoc-gen-go-grpc=$(BIN)/tools/protoc-gen-go-grpc \
		--go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative $(PROTO)

## proto-check: fail when the committed generated code is stale
proto-check: proto
	@git diff --exit-code -- pluginsdk/proto || { echo "generated protobuf code is stale: run make proto and commit" >&2; exit 1; }

## lint: go vet and gofmt on every module
lint:
	@set -e; for m in $(MODULES); do (cd $$m && $(GO) vet ./...); done
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:" >&2; echo "$$out" >&2; exit 1; fi

## bench: the plugin-boundary benchmarks
bench: build
	bash scripts/bench.sh

clean:
	rm -rf $(BIN)
