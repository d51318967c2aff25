//go:build cgo

package daemon

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/daemon/apiclient"
	"github.com/kiln-edge/kiln/gpu/gputest"
)

// testDaemon runs a whole kilnd in-process on a temp root, with GPUs from
// go-nvml's mocks, and talks to it over its real unix socket.
type testDaemon struct {
	d      *Daemon
	client *apiclient.Client
	stop   func()
}

func startTestDaemon(t testing.TB, root string, srv *gputest.Server) *testDaemon {
	t.Helper()
	return startDaemonConfig(t, root, srv, "containerd: {address: /nonexistent/containerd.sock}\n")
}

func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func shortRoot(t *testing.T) string {
	t.Helper()
	root, err := os.MkdirTemp("", "k")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	return root
}

func eventKinds(t *testing.T, td *testDaemon) string {
	t.Helper()
	evs, err := td.client.Events(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, e := range evs {
		kinds = append(kinds, e.Kind)
	}
	return strings.Join(kinds, " ")
}
