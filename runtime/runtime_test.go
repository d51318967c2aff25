package runtime

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// needContainerd returns the private containerd `make test` starts, or skips
// (fails under KILN_REQUIRE_REAL=1) without one.
func needContainerd(t *testing.T) string {
	t.Helper()
	addr := os.Getenv("KILN_TEST_CONTAINERD")
	if addr == "" {
		if os.Getenv("KILN_REQUIRE_REAL") == "1" {
			t.Fatal("KILN_REQUIRE_REAL=1 but KILN_TEST_CONTAINERD is not set: run through `make test`")
		}
		t.Skip("KILN_TEST_CONTAINERD is not set: run through `make test`, which starts a private containerd")
	}
	return addr
}

func TestVersionOfRealContainerd(t *testing.T) {
	addr := needContainerd(t)
	r, err := New(addr, "kiln-test-runtime", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := r.Version(ctx)
	if err != nil {
		t.Fatalf("Version() = %v", err)
	}
	if !strings.Contains(v, ".") {
		t.Errorf("Version() = %q; want a version number", v)
	}
}

func TestVersionWhenContainerdIsDown(t *testing.T) {
	r, err := New("/nonexistent/containerd.sock", "kiln-test-runtime", nil)
	if err != nil {
		t.Fatalf("New must not dial: %v", err)
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = r.Version(ctx)
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/containerd.sock is unreachable") {
		t.Fatalf("Version() = %v; want an unreachable error naming the socket", err)
	}
}
