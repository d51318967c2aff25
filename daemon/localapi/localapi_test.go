package localapi

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
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

// TestGuardAccess runs requests through NewHandler's guard as the identity
// ConnContext would attach: admin implies read, and a write route's ReadIf
// lets a reader make the requests that change nothing (a dry run).
func TestGuardAccess(t *testing.T) {
	// Group "root" (gid 0) exists on every Linux box; uid 1234 holds it.
	member := Identity{UID: 1234, Groups: []uint32{1234, 0}}
	stranger := Identity{UID: 1235, Groups: []uint32{1235}}
	reader := Groups{Read: "root", Admin: "kiln-no-such-group-a"}
	adminOnly := Groups{Read: "kiln-no-such-group-r", Admin: "root"}
	ok := func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }
	routes := []Route{
		{Method: "GET", Path: "/v1/status", Access: api.Read, Handler: ok},
		{Method: "POST", Path: "/v1/gc", Access: api.Write, Handler: ok,
			ReadIf: func(r *http.Request) bool { return r.URL.Query().Get("dry_run") == "1" }},
	}
	for _, tc := range []struct {
		name   string
		groups Groups
		id     Identity
		method string
		target string
		want   int
	}{
		{"admin-only member reads", adminOnly, member, "GET", "/v1/status", http.StatusNoContent},
		{"admin-only member writes", adminOnly, member, "POST", "/v1/gc", http.StatusNoContent},
		{"reader reads", reader, member, "GET", "/v1/status", http.StatusNoContent},
		{"reader's dry run is a read", reader, member, "POST", "/v1/gc?dry_run=1", http.StatusNoContent},
		{"reader cannot collect", reader, member, "POST", "/v1/gc", http.StatusForbidden},
		{"reader cannot collect with dry_run=0", reader, member, "POST", "/v1/gc?dry_run=0", http.StatusForbidden},
		{"stranger's dry run", reader, stranger, "POST", "/v1/gc?dry_run=1", http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := NewHandler(routes, func() Groups { return tc.groups }, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			req := httptest.NewRequest(tc.method, tc.target, nil)
			req = req.WithContext(context.WithValue(req.Context(), identityKey{}, tc.id))
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != tc.want {
				t.Errorf("%s %s as uid %d = %d %s; want %d", tc.method, tc.target, tc.id.UID, w.Code, w.Body, tc.want)
			}
		})
	}
}
