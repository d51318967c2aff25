package storage_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/storage"
	"github.com/kiln-edge/kiln/storage/storagetest"
)

func sha256sum(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

const helperEnv = "KILN_STORAGE_HELPER"

// startHelper re-executes the test binary as a child running the named
// helper test on dir, and returns it with its stdout.
func startHelper(t *testing.T, helper, dir string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+helper+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, bufio.NewScanner(out)
}

// TestHelperCrashAppender is the child of TestCrashSafety: 8 writers append
// until killed, printing "ack <seq> <writer> <i>" once each is durable.
func TestHelperCrashAppender(t *testing.T) {
	dir := os.Getenv(helperEnv)
	if dir == "" {
		t.Skip("helper process for TestCrashSafety")
	}
	s, err := storage.Open(dir, storage.Options{})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	for w := range 8 {
		for j := range 8 { // 8 in flight per writer
			go func() {
				for i := 0; ; i++ {
					e, err := s.Append(context.Background(), storage.Event{Kind: "crash", Details: map[string]string{"w": fmt.Sprint(w, ".", j), "i": fmt.Sprint(i)}})
					if err != nil {
						fmt.Println("append:", err)
						os.Exit(2)
					}
					mu.Lock()
					fmt.Printf("ack %d %d.%d %d\n", e.Seq, w, j, i)
					mu.Unlock()
				}
			}()
		}
	}
	time.Sleep(time.Hour)
}

func TestCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a child")
	}
	dir := t.TempDir()
	cmd, sc := startHelper(t, "TestHelperCrashAppender", dir)
	acked := map[uint64]string{}
	killed := false
	for sc.Scan() {
		line := sc.Text()
		var seq uint64
		var w, i string
		if _, err := fmt.Sscanf(line, "ack %d %s %s", &seq, &w, &i); err != nil {
			t.Logf("child: %s", line)
			continue
		}
		acked[seq] = w + " " + i
		if len(acked) >= 3000 && !killed {
			cmd.Process.Signal(syscall.SIGKILL) // mid-batch: writers are running flat out
			killed = true
		}
	}
	cmd.Wait()
	if !killed {
		t.Fatalf("child exited after %d acks before it was killed", len(acked))
	}
	s := storagetest.OpenAt(t, dir, storage.Options{})
	if err := s.Verify(context.Background()); err != nil {
		t.Fatalf("Verify after crash: %v", err)
	}
	head, _ := s.Head()
	evs, err := s.Events(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(evs)) != head {
		t.Fatalf("%d events, head %d", len(evs), head)
	}
	for seq, want := range acked {
		if seq > head {
			t.Fatalf("acknowledged seq %d lost (head %d)", seq, head)
		}
		e := evs[seq-1]
		if got := e.Details["w"] + " " + e.Details["i"]; got != want {
			t.Errorf("event %d = %q, acknowledged as %q", seq, got, want)
		}
	}
	t.Logf("%d acknowledged, %d on disk after SIGKILL", len(acked), head)
}

// TestHelperBlobWriter is the child of TestBlobKilledMidPut: it Puts a blob
// whose reader stalls after 4 MiB, says so, and waits to be killed.
func TestHelperBlobWriter(t *testing.T) {
	dir := os.Getenv(helperEnv)
	if dir == "" {
		t.Skip("helper process for TestBlobKilledMidPut")
	}
	s, err := storage.Open(dir, storage.Options{})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	pr, pw := io.Pipe()
	go func() {
		pw.Write(make([]byte, 4<<20))
		// Give PutBlob time to write what it read, then tell the parent.
		time.Sleep(100 * time.Millisecond)
		fmt.Println("wrote")
		time.Sleep(time.Hour)
	}()
	s.PutBlob(context.Background(), pr)
	os.Exit(3)
}

func TestBlobKilledMidPut(t *testing.T) {
	dir := t.TempDir()
	cmd, sc := startHelper(t, "TestHelperBlobWriter", dir)
	for sc.Scan() {
		if sc.Text() == "wrote" {
			break
		}
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	var visible []string
	filepath.WalkDir(filepath.Join(dir, "blobs", "sha256"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			visible = append(visible, p)
		}
		return nil
	})
	if len(visible) != 0 {
		t.Fatalf("half-written blob visible: %v", visible)
	}
	s := storagetest.OpenAt(t, dir, storage.Options{})
	rep, err := s.Reconcile(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// An unnamed temp file (O_TMPFILE) vanishes with the process: nothing to sweep. A named
	// one (filesystems without them) is swept.
	if len(rep.TempFilesRemoved) > 1 || len(rep.TempFilesRemoved) == 1 && !strings.Contains(rep.TempFilesRemoved[0], "put-") {
		t.Errorf("TempFilesRemoved = %v, want at most the one temp file", rep.TempFilesRemoved)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "blobs", "tmp")); len(ents) != 0 {
		t.Errorf("blobs/tmp still holds %d files", len(ents))
	}
}
