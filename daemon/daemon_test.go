//go:build cgo

package daemon

import (
	"context"
	"log/slog"
	"os"
	"os/user"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/daemon/apiclient"
	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/gpu"
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
	// The test's own primary group is the admin group, so the API lets the
	// test write without root.
	grp, err := user.LookupGroupId(strconv.Itoa(os.Getgid()))
	if err != nil {
		t.Fatal(err)
	}
	paths := config.NewPaths(root, "")
	if err := os.MkdirAll(paths.ConfigDir, 0o755); err != nil {
		t.Fatal(err)
	}
	yaml := "containerd: {address: /nonexistent/containerd.sock}\ngroups: {admin: " + grp.Name + "}\nshutdown_timeout: 5s\n"
	if err := os.WriteFile(paths.ConfigFile, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.LoadDaemon(paths)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	mgr := gpu.New(srv, log, gpu.Options{SampleInterval: 50 * time.Millisecond})
	d, err := New(Options{Config: cfg, Build: api.BuildInfo{Version: "test"}, Log: log, GPU: mgr})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	td := &testDaemon{d: d, client: apiclient.New(paths.APISocket)}
	stopped := false
	td.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v", err)
		}
	}
	t.Cleanup(td.stop)
	waitUntil(t, "API up", func() bool { _, err := td.client.Version(context.Background()); return err == nil })
	return td
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
