package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestCLILinksNoDaemonParts keeps the CLI small and safe to run anywhere: it
// must not link containerd, NVML or bbolt (Tailscale's deptest).
func TestCLILinksNoDaemonParts(t *testing.T) {
	out, err := exec.Command(goBinary(), "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps returned %d packages; the check would be vacuous", len(deps))
	}
	for _, dep := range deps {
		for _, banned := range []string{"github.com/containerd/", "github.com/NVIDIA/go-nvml", "go.etcd.io/bbolt"} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("cmd/kiln links %s (banned prefix %s)", dep, banned)
			}
		}
	}
}

// goBinary is the go command running the test: go test puts its GOROOT/bin
// first on PATH.
func goBinary() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}
