package localapi

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-edge/kiln/daemon/api"
)

func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "k")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func TestListenReplacesOnlyStaleSockets(t *testing.T) {
	dir := shortDir(t)
	path := filepath.Join(dir, "s.sock")

	live, err := Listen(path, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o666 {
		t.Fatalf("socket mode %v, %v; want 0666", fi.Mode(), err)
	}
	if _, err := Listen(path, 0o666); err == nil || !strings.Contains(err.Error(), "another kilnd is serving") {
		t.Fatalf("Listen on a live socket: %v; want refusal", err)
	}

	// A socket nobody serves any more (the listener closed without unlinking).
	live.(*net.UnixListener).SetUnlinkOnClose(false)
	live.Close()
	l, err := Listen(path, 0o666)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	l.Close()

	file := filepath.Join(dir, "f.sock")
	if err := os.WriteFile(file, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(file, 0o666); err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Fatalf("Listen on a regular file: %v; want refusal", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Fatalf("regular file changed to %q", b)
	}

	long := filepath.Join(dir, strings.Repeat("x", 120))
	if _, err := Listen(long, 0o666); err == nil || !strings.Contains(err.Error(), "at most 107") {
		t.Fatalf("Listen on a %d-byte path: %v; want a length error", len(long), err)
	}
}

func TestAllowedRootAndStrangers(t *testing.T) {
	g := Groups{Read: "kiln-no-such-group-r", Admin: "kiln-no-such-group-a"}
	for _, tc := range []struct {
		id     Identity
		access api.Access
		want   bool
	}{
		{Identity{UID: 0}, api.Write, true},
		{Identity{UID: 0}, api.Read, true},
		{Identity{UID: 1234, Groups: []uint32{1234}}, api.Read, false},
		{Identity{UID: 1234, Groups: []uint32{1234}}, api.Write, false},
	} {
		got, msg := g.Allowed(tc.id, tc.access)
		if got != tc.want {
			t.Errorf("Allowed(uid %d, %s) = %v (%s); want %v", tc.id.UID, tc.access, got, msg, tc.want)
		}
		if !got && !strings.Contains(msg, g.Admin) {
			t.Errorf("refusal %q does not name the admin group", msg)
		}
	}
}

func TestNewHandlerRefusesUnclassifiedRoute(t *testing.T) {
	_, err := NewHandler([]Route{{Method: "GET", Path: "/v1/x"}}, func() Groups { return Groups{} }, nil)
	if err == nil {
		t.Fatal("a route without read/write access was accepted")
	}
}
