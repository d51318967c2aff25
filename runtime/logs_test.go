package runtime

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestLogCapAndFollow appends like the shim (O_APPEND) and rotates like
// capLog; the follower must see every line exactly once, in order, and
// the files must stay near the cap.
func TestLogCapAndFollow(t *testing.T) {
	old := logPoll
	logPoll = 10 * time.Millisecond
	t.Cleanup(func() { logPoll = old })
	path := filepath.Join(t.TempDir(), "run.log")
	var mu sync.Mutex
	var got bytes.Buffer
	fctx, stopFollow := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- FollowLog(fctx, path, lockedWriter{&mu, &got}) }()

	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	var want strings.Builder
	for i := range 400 {
		line := fmt.Sprintf("line %04d\n", i)
		want.WriteString(line)
		if _, err := f.WriteString(line); err != nil {
			t.Fatal(err)
		}
		if i%20 == 19 {
			// What capLog does on its tick, here between bursts so the
			// test is deterministic about which bytes a rotation moves.
			if _, err := rotateIfOver(path, 2048); err != nil {
				t.Fatal(err)
			}
			time.Sleep(15 * time.Millisecond)
		}
	}
	f.Close()
	time.Sleep(100 * time.Millisecond)
	stopFollow()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + ".1"} {
		if st, err := os.Stat(p); err == nil && st.Size() > 4096 {
			t.Errorf("%s is %d bytes; want <= 4096", p, st.Size())
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if got.String() != want.String() {
		t.Errorf("followed %d bytes; want %d, every line once in order", got.Len(), want.Len())
	}
}

// TestLogFloodKeepsTail: a task that wrote far past its cap between two
// checks (a print loop does tens of MB/s) leaves only the last half of the
// cap, after a line saying how much was dropped; the live file restarts.
func TestLogFloodKeepsTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run.log")
	var flood strings.Builder
	for i := range 20000 {
		fmt.Fprintf(&flood, "flood %06d\n", i) // 13 bytes a line, 260,000 in all
	}
	if err := os.WriteFile(path, []byte(flood.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	rotated, err := rotateIfOver(path, 4096)
	if err != nil || !rotated {
		t.Fatalf("rotateIfOver = %v, %v; want a rotation", rotated, err)
	}
	old, err := os.ReadFile(path + ".1")
	if err != nil {
		t.Fatal(err)
	}
	head, tail, _ := strings.Cut(string(old), "\n")
	if want := fmt.Sprintf("kiln: %d bytes of log dropped", 260000-4096); !strings.HasPrefix(head, want) {
		t.Errorf("first line of %s.1 = %q; want it to start %q", path, head, want)
	}
	if len(tail) != 4096 || !strings.HasSuffix(tail, "flood 019999\n") {
		t.Errorf("%s.1 keeps %d bytes ending %q; want the last 4096 of the flood", path, len(tail), tail[max(len(tail)-13, 0):])
	}
	if st, err := os.Stat(path); err != nil || st.Size() != 0 {
		t.Errorf("live file after the rotation: %v, %v; want it empty", st, err)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// TestTrimPairAtEnd: a rotation moves a whole live file of up to the cap to
// path.1, so beside a live file of up to half the pair passes the cap while
// the task runs; once it ends, trimPair holds the pair to the cap, keeping
// the newest lines and saying how much it dropped.
func TestTrimPairAtEnd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run.log")
	line := func(i int) string { return fmt.Sprintf("line %06d\n", i) } // 12 bytes
	var old, live strings.Builder
	for i := range 1000 {
		old.WriteString(line(i)) // 12,000 bytes: a whole live file moved at a rotation
	}
	for i := 1000; i < 1400; i++ {
		live.WriteString(line(i)) // 4,800 bytes
	}
	for p, text := range map[string]string{path + ".1": old.String(), path: live.String()} {
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const limit = 12000
	if err := trimPair(path, limit); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path + ".1")
	if err != nil {
		t.Fatal(err)
	}
	head, tail, _ := strings.Cut(string(b), "\n")
	if want := fmt.Sprintf("kiln: %d bytes of log dropped", 12000-(limit-4800)); !strings.HasPrefix(head, want) {
		t.Errorf("first line = %q; want it to start %q", head, want)
	}
	if len(tail)+4800 != limit || !strings.HasSuffix(tail, line(999)) || !strings.HasPrefix(tail, line(1000-(limit-4800)/12)) {
		t.Errorf("%s.1 keeps %d bytes from %q; want the newest %d", path, len(tail), tail[:12], limit-4800)
	}
	if got, _ := os.ReadFile(path); string(got) != live.String() {
		t.Error("the live file changed")
	}
	// Within the cap, nothing changes.
	if err := trimPair(path, 1<<20); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(path + ".1"); string(again) != string(b) {
		t.Error("trimPair changed a pair within its cap")
	}
}
