# kiln — make help lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT     ?= $(shell git rev-parse --short HEAD 2>/dev/null)
BUILD_DATE ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS    := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.buildDate=$(BUILD_DATE)
GO         ?= $(shell command -v go || echo /usr/local/go/bin/go)
# go-nvml's cgo preamble is noisy with deprecation warnings.
export CGO_ENABLED ?= 1
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations
GOLANGCI_VERSION := v2.15.0
# Per test binary; CI as a whole stays under 20 minutes.
TEST_TIMEOUT ?= 10m
# The packages with concurrency run again under the race detector (-short:
# the long soak-like tests already ran without it).
RACE_PKGS := ./daemon/serve/ ./daemon/ingest/ ./daemon/pipeline/... ./daemon/monitor/ ./storage/... ./systemd/
# Packages: nfpm as a pinned tool (outside kiln's module graph).
NFPM_VERSION := v2.45.2
NFPM := bin/tools/nfpm-$(NFPM_VERSION)/nfpm
PKG_ARCHES ?= amd64 arm64
PKG_VERSION = $(shell packaging/version.sh $(VERSION))
# The Go-built example images (tabular and images trainer and server): what the tests and the
# offline bundle use. The PyTorch example image (images-torch) is built by `make images` too, but
# never by test or bundle (434 MB on a 1.3 GB cached rootfs).
GO_IMAGES := $(addprefix bin/images/,tabular-trainer.tar tabular-server.tar image-trainer.tar image-server.tar)

.PHONY: help deps build test lint bench soak demo clean images images-go packages bundle fuzz images-torch test-torch

help: ## List the targets.
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

deps: ## Install containerd, runc and the test/bench baselines from the distribution (root; idempotent).
	@.ci/deps

build: ## Build bin/kilnd, bin/kiln and bin/kilnbench.
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ ./cmd/kilnd ./cmd/kiln ./cmd/kilnbench

test: deps build packages images-go bundle ## Run every test, beside a private containerd (root for the real-part tests).
	$(GO) vet ./...
	.ci/with-containerd $(GO) test -count=1 -p 1 -timeout $(TEST_TIMEOUT) ./...
	.ci/with-containerd $(GO) test -race -short -count=1 -p 1 -timeout $(TEST_TIMEOUT) $(RACE_PKGS)

packages: ## Build .deb and .rpm (amd64, arm64) into bin/packages/; lintian checks the amd64 .deb.
	@test -x $(NFPM) || GOBIN=$(CURDIR)/$(dir $(NFPM)) $(GO) install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION)
	VERSION='$(VERSION)' COMMIT='$(COMMIT)' BUILD_DATE='$(BUILD_DATE)' GO='$(GO)' NFPM='$(NFPM)' ARCHES='$(PKG_ARCHES)' packaging/build.sh

bundle: packages images-go ## Build bin/kiln-VERSION-offline.tar.gz: packages, the Go example images, SHA256SUMS, install.sh.
	VERSION='$(PKG_VERSION)' IMAGES='$(GO_IMAGES)' packaging/bundle/build.sh

images: images-go images-torch ## Build every example image as an OCI archive in bin/images/ (no Docker): the Go ones and the PyTorch one.

images-go: ## Build the Go example images: bin/images/{tabular,image}-{trainer,server}.tar (seconds; what test and bundle use).
	$(GO) run ./examples/tabular/buildimages -o bin/images

# The PyTorch example (examples/torch) is apart from test and bundle: its image is built on a
# Debian bookworm rootfs with python3-torch (~1.3 GB, debootstrapped once in ~5 min, root) cached
# under /var/cache/kiln, keyed by a hash of mkrootfs.sh (its package list and preparation).
TORCH_ROOTFS ?= /var/cache/kiln/torch-rootfs-$(shell sha256sum examples/torch/mkrootfs.sh 2>/dev/null | cut -c1-12)
TORCH_SRC := $(filter-out %_test.go,$(wildcard examples/torch/*.go examples/torch/image/* examples/torch/buildimage/*.go runtime/ocitar/*.go))
images-torch: bin/images/torch-digits.tar ## Build bin/images/torch-digits.tar (kiln.local/torch-digits:1, Debian's CPU-only PyTorch) on a cached debootstrapped rootfs (root; ~5 min once, then ~2 min; not part of test or bundle).

bin/images/torch-digits.tar: $(TORCH_ROOTFS)/.kiln-complete $(TORCH_SRC)
	$(GO) run ./examples/torch/buildimage -rootfs $(TORCH_ROOTFS) -o bin/images

$(TORCH_ROOTFS)/.kiln-complete:
	@echo "images-torch: debootstrapping $(TORCH_ROOTFS) (once; ~5 min, ~650 MB of packages)"
	examples/torch/mkrootfs.sh $(TORCH_ROOTFS)

test-torch: deps images-torch ## Train and serve the PyTorch example through kiln's runtime in a private containerd (holdout accuracy >= 0.9, training < 60 s).
	KILN_TORCH=1 .ci/with-containerd $(GO) test -count=1 -v -timeout 10m ./examples/torch/

# Each fuzz target runs alone for FUZZTIME (go test -fuzz takes one target at a time); their
# seed corpora (f.Add and testdata/fuzz/) already run in `make test`.
FUZZTIME ?= 30s
# go test minimizes each new input for up to 60 s by default, uncounted and unfuzzed: on
# kilobyte seeds (a pipeline spec, an image archive) that ate most of FUZZTIME.
FUZZMINIMIZETIME ?= 2s
fuzz: ## Fuzz every Fuzz* target in turn, FUZZTIME each (default 30s); a finding is saved under testdata/fuzz/.
	@set -e; for pd in $$($(GO) list -f '{{.ImportPath}}={{.Dir}}' ./...); do \
		pkg=$${pd%%=*}; dir=$${pd#*=}; \
		for t in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | cut -c6-); do \
			echo "== $$pkg $$t ($(FUZZTIME))"; \
			$(GO) test $$pkg -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME); \
		done; \
	done

lint: ## Run golangci-lint (installed into bin/ at a pinned version).
	@test -x bin/golangci-lint || GOBIN=$(CURDIR)/bin $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_VERSION)
	bin/golangci-lint run ./...

bench: build images-torch ## Run every benchmark group REPEAT times (default 5); merges into bench/results.json and generates BENCHMARKS.md.
	@mkdir -p bench
	.ci/with-containerd bin/kilnbench -bin bin -repeat $(or $(REPEAT),5) -json bench/results.json -md BENCHMARKS.md

soak: deps build ## Run kilnd for SOAK (default 10m) under drops, load, feedback, promotions, rollbacks and polling; RSS, goroutines, fds and bbolt read txs must stay flat (not in CI).
	@mkdir -p bench
	.ci/with-containerd bin/kilnbench -bin bin -only soak -soak $(or $(SOAK),10m) -soak-csv bench/soak.csv -json bench/soak.json

demo: deps build images ## Run the whole loop, narrated: real data trained and served, a quarantine, a corrupted batch rolled back, drift retrained, the PyTorch digits; charts and dashboard screenshots in bin/demo/ (UI=1: keep the dashboard up until Ctrl-C).
	@GO='$(GO)' .ci/with-containerd .ci/demo $(if $(UI),-ui)

clean: ## Remove build outputs (bench/results.json is committed and stays).
	rm -rf bin bench/soak.csv bench/soak.json
