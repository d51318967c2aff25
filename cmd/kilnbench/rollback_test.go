package main

import (
	"net"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// rollback.non2xx must be able to be non-zero: the load counts a refused
// connection and a non-2xx answer as failures, and attributes a 2xx answer
// to the model its X-Kiln-Model header names.
func TestRBLoadCountsFailures(t *testing.T) {
	dir := t.TempDir()

	// A socket file nobody listens on any more: connect(2) is refused.
	refused := filepath.Join(dir, "refused.sock")
	ln, err := net.Listen("unix", refused)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	_ = ln.Close()
	l := newRBLoad(refused, "1,2\n", 2)
	l.start()
	time.Sleep(50 * time.Millisecond)
	reqs := l.end()
	if l.failed.Load() == 0 || int64(len(reqs)) != l.failed.Load() {
		t.Fatalf("refused connections: %d failed of %d sent; want all counted", l.failed.Load(), len(reqs))
	}
	for _, r := range reqs {
		if r.model != "" {
			t.Fatalf("a refused request attributed to model %q", r.model)
		}
	}
	t.Logf("refused: %d counted; first: %s", l.failed.Load(), l.firstFailure())

	// A live endpoint that answers 200 from m1, then 503 from m2.
	sock := filepath.Join(dir, "ep.sock")
	eln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) <= 5 {
			w.Header().Set("X-Kiln-Model", "p/m1")
			_, _ = w.Write([]byte("benign\n"))
			return
		}
		w.Header().Set("X-Kiln-Model", "p/m2")
		w.WriteHeader(http.StatusServiceUnavailable)
	})}
	go func() { _ = srv.Serve(eln) }()
	defer srv.Close()
	l = newRBLoad(sock, "1,2\n", 1)
	l.start()
	deadline := time.Now().Add(5 * time.Second)
	for l.sent.Load() < 20 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	reqs = l.end()
	ok := 0
	for _, r := range reqs {
		if r.model == "p/m1" {
			ok++
		}
		if r.end < r.start {
			t.Fatalf("request answered before it was sent: %+v", r)
		}
	}
	if ok != 5 || l.failed.Load() != int64(len(reqs)-5) || l.failed.Load() == 0 {
		t.Fatalf("%d answered by p/m1, %d failed of %d; want 5 and the rest (503) failed", ok, l.failed.Load(), len(reqs))
	}
}
