# Machine Server. `make run` starts the standalone platform on :8080;
# `make test` runs every test; `make bench` prints the benchmark figures.
# Each installs what it needs first (apt packages, Go tools), idempotently.
SHELL := /bin/bash
GO ?= go
BUILD := $(CURDIR)/build
FW := $(BUILD)/firmware
PLUGIN := $(BUILD)/plugin
GOBIN_DIR := $(shell $(GO) env GOPATH)/bin
VERSITYGW := github.com/versity/versitygw/cmd/versitygw@v1.8.0
export PATH := $(GOBIN_DIR):$(PATH)
export MS_TEST_FIRMWARE_DIR := $(FW)
export MS_COVERAGE_PLUGIN := $(PLUGIN)/libmscov.so

# command:package pairs (or /absolute/file:package for a package without a
# command); a package is installed only if its command or file is missing.
# qemu-system-misc brings qemu-system-riscv32 and qemu-system-avr; Debian's
# gdb-multiarch has no AVR support, gdb-avr has.
RUN_TOOLS := qemu-system-arm:qemu-system-arm qemu-system-riscv32:qemu-system-misc \
	qemu-system-avr:qemu-system-misc qemu-img:qemu-utils gcc:gcc
TEST_TOOLS := $(RUN_TOOLS) arm-none-eabi-gcc:gcc-arm-none-eabi redis-server:redis-server \
	gdb-multiarch:gdb-multiarch lcov:lcov curl:curl jq:jq \
	riscv64-unknown-elf-gcc:gcc-riscv64-unknown-elf avr-gcc:gcc-avr \
	/usr/lib/avr/include/avr/io.h:avr-libc avr-gdb:gdb-avr chromium:chromium tshark:tshark

define apt_install
	@missing=""; for pair in $(1); do \
		c="$${pair%%:*}"; \
		command -v "$$c" >/dev/null 2>&1 || [ -e "$$c" ] || case " $$missing " in \
			*" $${pair##*:} "*) ;; *) missing="$$missing $${pair##*:}";; esac; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
		$$sudo apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
endef

.PHONY: run test bench build firmware plugin deps-run deps-test vet clean fuzz ui

# fuzz_all runs every fuzz target (each `func Fuzz...` in a _test.go file)
# for $(1), one at a time, as `go test -fuzz` allows one target per run.
# make test counts executions (Nx): Go 1.26's coordinator can fail a target
# that found nothing with "context deadline exceeded" when a time budget
# ends (golang/go#75804, fixed in 1.27), and a count has no deadline.
define fuzz_all
	@for f in $$(grep -rl --include='*_test.go' '^func Fuzz' . | grep -v '^./build/'); do \
		d=$$(dirname $$f); \
		for t in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do \
			$(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(1) $$d || exit 1; \
		done; \
	done
endef

deps-run:
	$(call apt_install,$(RUN_TOOLS))

deps-test:
	$(call apt_install,$(TEST_TOOLS))
	@command -v versitygw >/dev/null 2>&1 || { echo "building versitygw (about 2 minutes, once)"; $(GO) install $(VERSITYGW); }

# ui bundles the web UI (npm ci from ui/package-lock.json when it changed,
# then esbuild) into ui/dist, which the binaries embed.
ui:
	$(call apt_install,npm:npm)
	$(GO) run ./ui/build

build: ui
	$(GO) build -o $(BUILD)/bin/ ./cmd/machineserver ./runner ./functions/sessions ./functions/programs ./functions/snapshots ./functions/jobs

firmware:
	@$(MAKE) -s -C firmware OUT=$(FW)

plugin:
	@$(MAKE) -s -C runner/coverage/plugin OUT=$(PLUGIN)

run: deps-run build plugin
	$(BUILD)/bin/machineserver

vet:
	@test -z "$$(gofmt -l . | grep -v '^build/')" || { gofmt -l . ; echo "gofmt needed"; exit 1; }
	$(GO) vet ./...

test: deps-test firmware plugin ui vet
	$(GO) test -count=1 -timeout 30m ./...
	$(call fuzz_all,20000x)

# fuzz runs every fuzz target longer (FUZZTIME each, default 30s).
FUZZTIME ?= 30s
fuzz:
	$(call fuzz_all,$(FUZZTIME))

bench: deps-test firmware plugin ui
	$(GO) test -count=1 -run '^$$' -bench PowerOnToFirstByte -benchtime 20x -timeout 30m ./e2e/
	$(GO) test -count=1 -run '^$$' -bench IdleSessions -benchtime 1x -timeout 30m ./e2e/
	$(GO) test -count=1 -run '^$$' -bench Snapshot -benchtime 20x -timeout 30m ./e2e/
	$(GO) test -count=1 -run '^$$' -bench RoundTrip -benchtime 5000x -timeout 30m ./runner/gdb/
	$(GO) test -count=1 -run '^$$' -bench 'Overhead|Report' -benchtime 20x -timeout 30m ./runner/coverage/
	$(GO) test -count=1 -run '^$$' -bench Clock -benchtime 10x -timeout 30m ./runner/qemu/
	$(GO) test -count=1 -run '^$$' -bench GetSessionAt200rps -benchtime 1000x -timeout 30m ./e2e/
	$(GO) test -count=1 -run '^$$' -bench ConsoleFlood -benchtime 5x -timeout 30m ./e2e/
	$(GO) test -count=1 -run '^$$' -bench 'Jobs$$' -benchtime 20x -timeout 30m ./e2e/
	$(GO) test -count=1 -run '^$$' -bench '^BenchmarkUI$$' -benchtime 20x -timeout 30m ./e2e/
	$(GO) test -count=1 -run '^$$' -bench EventLatency -benchtime 50x -timeout 30m ./e2e/
	$(GO) test -count=1 -run '^$$' -bench 'RecordSlowdown|Recording$$' -benchtime 3x -timeout 30m ./e2e/
	$(GO) test -count=1 -run '^$$' -bench UARTLink -benchtime 10x -timeout 30m ./runner/link/
	$(GO) test -count=1 -run '^$$' -bench EthernetSwitch -benchtime 10x -timeout 30m ./runner/link/
	$(GO) test -count=1 -run '^$$' -bench SwitchRoundTrip -benchtime 20000x -timeout 30m ./runner/link/
	$(GO) test -count=1 -run '^$$' -bench RunnerLink -benchtime 10x -timeout 30m ./e2e/
	$(GO) test -count=1 -run '^$$' -bench SystemPowerOn -benchtime 20x -timeout 30m ./e2e/
	$(GO) test -count=1 -run '^$$' -bench VirtualTime -benchtime 1x -timeout 30m ./runner/host/

clean:
	rm -rf $(BUILD)
