package main

import (
	"net"
	"net/http"
	"path/filepath"
	"slices"
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

// rbMeasure picks the standby's answer to the first request sent at or
// after the alarm, and its checks can fail: a request sent after that
// answer yet answered by the rolled-back model counts as late; a swap the
// standby never answered counts as missing.
func TestRBMeasure(t *testing.T) {
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms float64) int64 { return base.Add(time.Duration(ms * 1e6)).UnixNano() }
	s := &rbSwap{good: "p/m1", bad: "p/m2", by: "paired", alarm: base.Add(10 * time.Millisecond), rolled: base.Add(14 * time.Millisecond)}
	reqs := []rbReq{
		{at(9), at(11), "p/m1"},  // sent before the alarm: not counted
		{at(11), at(15), "p/m2"}, // after the alarm, still the bad model
		{at(16), at(19), "p/m1"}, // a standby answer, not the earliest
		{at(15), at(18), "p/m1"}, // the earliest standby answer: the swap ends here
		{at(20), at(21), "p/m1"},
	}
	m := rbMeasure(slices.Clone(reqs), []*rbSwap{s})
	if len(m.total) != 1 || m.total[0] != 8 || m.toRolled[0] != 4 || m.rolledToAnswer[0] != 4 || m.sentAfter[0] != 5 {
		t.Fatalf("measured %+v; want total 8 ms = alarm->rollback 4 + rollback->answer 4, sent 5 ms after the alarm", m)
	}
	if m.late != 0 || m.missing != 0 || m.by["paired"] != 1 {
		t.Fatalf("clean swap: late %d missing %d by %v", m.late, m.missing, m.by)
	}

	// The rolled-back model answering a request sent after the standby's
	// first answer is a broken flip.
	m = rbMeasure(append(slices.Clone(reqs), rbReq{at(18.5), at(19.5), "p/m2"}), []*rbSwap{s})
	if m.late != 1 {
		t.Fatalf("late = %d; want 1", m.late)
	}
	// No standby answer after the alarm.
	m = rbMeasure([]rbReq{{at(11), at(15), "p/m2"}, {at(12), at(13), ""}}, []*rbSwap{s})
	if m.missing != 1 || len(m.total) != 0 {
		t.Fatalf("missing = %d, %d samples; want 1 and none", m.missing, len(m.total))
	}
}
