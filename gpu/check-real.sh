#!/bin/sh
# gpu/check-real.sh — kiln's GPU check on a machine with a real NVIDIA GPU.
#
# Prints the real inventory (NVML), one telemetry sample taken by the running
# sampler, the placement of a 1-GPU request and the CDI check, in well under
# two minutes. It fails when NVML is absent: this is the one place kiln
# insists on a GPU.
#
#   gpu/check-real.sh           run the check: bin/gpu.test if present, else
#                               build it with go (needs the module cache: no
#                               network is used)
#   gpu/check-real.sh --build   only build bin/gpu.test (do this where the
#                               module cache is, then copy the repo over)
set -eu

cd "$(dirname "$0")/.."
bin=bin/gpu.test
: "${CGO_CFLAGS:=-O2 -g -Wno-deprecated-declarations}"
export CGO_CFLAGS

find_go() {
	if command -v go >/dev/null 2>&1; then
		command -v go
	elif [ -x /usr/local/go/bin/go ]; then
		echo /usr/local/go/bin/go
	else
		return 1
	fi
}

build() {
	if ! gobin=$(find_go); then
		echo "check-real: no $bin and no Go toolchain (not on PATH, not at /usr/local/go/bin)." >&2
		echo "check-real: build it where Go and the module cache are: gpu/check-real.sh --build" >&2
		exit 2
	fi
	mkdir -p bin
	echo "check-real: building $bin with $("$gobin" version)"
	# GOPROXY=off: fail at once, with the missing module named, instead of
	# waiting on a network the GPU machine does not have.
	if ! CGO_ENABLED=1 GOPROXY=off GOFLAGS=-mod=mod timeout 100 "$gobin" test -c -o "$bin" ./gpu/; then
		echo "check-real: build failed; without network the module cache must hold the modules in go.sum" >&2
		exit 2
	fi
}

if [ "${1:-}" = "--build" ]; then
	build
	exit 0
fi

if [ ! -x "$bin" ]; then
	build
fi

if command -v nvidia-smi >/dev/null 2>&1; then
	echo "== nvidia-smi -L (for comparison)"
	nvidia-smi -L || true
fi

echo "== kiln gpu check ($bin)"
KILN_REAL_GPU=1 timeout 100 "$bin" -test.run '^(TestRealGPU|TestOpenHere)$' -test.v -test.count=1
