package systemd

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// notifySocket listens on a unixgram socket and points NOTIFY_SOCKET at it. The directory
// comes from os.MkdirTemp, not t.TempDir: sun_path is 108 bytes, subtest names are long.
func notifySocket(t *testing.T) *net.UnixConn {
	t.Helper()
	dir, err := os.MkdirTemp("", "k")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "n")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return c
}

// recv reads one datagram and the fds sent with it, failing after timeout.
func recv(t *testing.T, c *net.UnixConn, timeout time.Duration) (string, []int, error) {
	t.Helper()
	buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4*8))
	c.SetReadDeadline(time.Now().Add(timeout))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return "", nil, err
	}
	var fds []int
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		t.Fatalf("parse control message: %v", err)
	}
	for _, m := range msgs {
		rights, err := unix.ParseUnixRights(&m)
		if err != nil {
			t.Fatalf("parse SCM_RIGHTS: %v", err)
		}
		fds = append(fds, rights...)
	}
	return string(buf[:n]), fds, nil
}

func TestNotifierSends(t *testing.T) {
	tests := []struct {
		name string
		send func(*Notifier) error
		want string
	}{
		{"ready", (*Notifier).Ready, "READY=1"},
		{"stopping", (*Notifier).Stopping, "STOPPING=1"},
		{"watchdog", (*Notifier).Watchdog, "WATCHDOG=1"},
		{"status", func(n *Notifier) error { return n.Status("restoring 3 runs") }, "STATUS=restoring 3 runs"},
		{"remove fds", func(n *Notifier) error { return n.RemoveFDs("ep-pumps") }, "FDSTOREREMOVE=1\nFDNAME=ep-pumps"},
		{"status multiline", func(n *Notifier) error { return n.Status("a\nb\r\nc") }, "STATUS=a b c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := notifySocket(t)
			n := NewNotifier()
			if !n.Enabled() {
				t.Fatal("Enabled() = false with NOTIFY_SOCKET set")
			}
			if err := tt.send(n); err != nil {
				t.Fatalf("send: %v", err)
			}
			got, fds, err := recv(t, c, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want || len(fds) != 0 {
				t.Errorf("got datagram %q with %d fds, want %q without fds", got, len(fds), tt.want)
			}
		})
	}
}

func TestNotifierReloading(t *testing.T) {
	c := notifySocket(t)
	before := monotonicUsec(t)
	if err := NewNotifier().Reloading(); err != nil {
		t.Fatal(err)
	}
	after := monotonicUsec(t)
	got, _, err := recv(t, c, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	head, usec, ok := strings.Cut(got, "\nMONOTONIC_USEC=")
	if !ok || head != "RELOADING=1" {
		t.Fatalf("got %q, want RELOADING=1\\nMONOTONIC_USEC=<usec>", got)
	}
	u, err := strconv.ParseInt(usec, 10, 64)
	if err != nil || u < before || u > after {
		t.Errorf("got MONOTONIC_USEC=%s, want an integer in [%d, %d]", usec, before, after)
	}
}

func monotonicUsec(t *testing.T) int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return ts.Nano() / 1000
}

func TestNotifierOffSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	for _, n := range []*Notifier{NewNotifier(), nil, {}} {
		if n.Enabled() {
			t.Errorf("Enabled() = true without NOTIFY_SOCKET")
		}
		for _, err := range []error{n.Ready(), n.Status("x"), n.Stopping(), n.Reloading(), n.Watchdog(), n.StoreFDs("x", os.Stdin)} {
			if err != nil {
				t.Errorf("got %v, want nil off systemd", err)
			}
		}
	}
}

func TestNotifierAbstractSocket(t *testing.T) {
	name := "@kiln-notify-test-" + strconv.Itoa(os.Getpid())
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	t.Setenv("NOTIFY_SOCKET", name)
	if err := NewNotifier().Ready(); err != nil {
		t.Fatal(err)
	}
	if got, _, err := recv(t, c, 5*time.Second); err != nil || got != "READY=1" {
		t.Errorf("got %q, %v; want READY=1", got, err)
	}
}

func TestNotifierDeadSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "/nonexistent/kiln-notify")
	if err := NewNotifier().Ready(); err == nil {
		t.Error("Ready() to a missing socket: got nil error, want one")
	}
}

func TestStoreFDs(t *testing.T) {
	c := notifySocket(t)
	path := filepath.Join(t.TempDir(), "state")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	if err := NewNotifier().StoreFDs("model-cache", f, pw); err != nil {
		t.Fatal(err)
	}
	got, fds, err := recv(t, c, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if want := "FDSTORE=1\nFDNAME=model-cache"; got != want {
		t.Errorf("got datagram %q, want %q", got, want)
	}
	if len(fds) != 2 {
		t.Fatalf("got %d fds, want 2", len(fds))
	}
	pipe := os.NewFile(uintptr(fds[1]), "received pipe")
	defer pipe.Close()
	if _, err := pipe.WriteString("p"); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 1)
	if _, err := pr.Read(p); err != nil || p[0] != 'p' {
		t.Errorf("read %q, %v from the pipe; want the byte written through the received fd", p, err)
	}
	recvd := os.NewFile(uintptr(fds[0]), "received")
	defer recvd.Close()
	if _, err := recvd.WriteString("via received fd"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff("via received fd", string(b)); diff != "" {
		t.Errorf("file written through the received fd (-want +got):\n%s", diff)
	}
}

func TestStoreFDsRejects(t *testing.T) {
	notifySocket(t)
	n := NewNotifier()
	for _, tc := range []struct {
		name  string
		files []*os.File
	}{
		{"a:b", []*os.File{os.Stdin}},
		{"a\nb", []*os.File{os.Stdin}},
		{strings.Repeat("x", 256), []*os.File{os.Stdin}},
		{"ok", nil},
	} {
		if err := n.StoreFDs(tc.name, tc.files...); err == nil {
			t.Errorf("StoreFDs(%.20q, %d files) = nil, want an error", tc.name, len(tc.files))
		}
	}
}

func TestWatchdogInterval(t *testing.T) {
	me := strconv.Itoa(os.Getpid())
	tests := []struct {
		usec, pid string
		want      time.Duration
		wantOK    bool
	}{
		{"", "", 0, false},
		{"30000000", "", 30 * time.Second, true},
		{"30000000", me, 30 * time.Second, true},
		{"30000000", strconv.Itoa(os.Getpid() + 1), 0, false},
		{"soon", "", 0, false},
		{"-5", "", 0, false},
		{"30000000", "me", 0, false},
	}
	for _, tt := range tests {
		t.Setenv("WATCHDOG_USEC", tt.usec)
		t.Setenv("WATCHDOG_PID", tt.pid)
		got, ok := WatchdogInterval()
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: got (%v, %v), want (%v, %v)", tt.usec, tt.pid, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestRunWatchdogPingsAtHalfInterval(t *testing.T) {
	c := notifySocket(t)
	const interval = 200 * time.Millisecond
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		NewNotifier().RunWatchdog(ctx, interval, func() error { return nil }, nil)
	}()
	var at []time.Duration
	for len(at) < 4 {
		got, _, err := recv(t, c, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if got != "WATCHDOG=1" {
			t.Fatalf("got %q, want WATCHDOG=1", got)
		}
		at = append(at, time.Since(start))
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("RunWatchdog did not return after cancel")
	}
	// Ticks come at 100ms, 200ms, ...: the mean gap must be about interval/2, never interval.
	if mean := (at[3] - at[0]) / 3; mean < interval/4 || mean > 3*interval/4 {
		t.Errorf("pings at %v: mean gap %v, want about %v", at, mean, interval/2)
	}
}

func TestRunWatchdogStopsWhenUnhealthy(t *testing.T) {
	c := notifySocket(t)
	var logs bytes.Buffer
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	NewNotifier().RunWatchdog(ctx, 40*time.Millisecond, func() error { return errors.New("store wedged") },
		slog.New(slog.NewTextHandler(&logs, nil)))
	if got, _, err := recv(t, c, 50*time.Millisecond); err == nil {
		t.Errorf("got datagram %q while unhealthy, want none", got)
	}
	if !strings.Contains(logs.String(), "skipping watchdog ping") || !strings.Contains(logs.String(), "store wedged") {
		t.Errorf("log %q: want a skipped ping with the health error", logs.String())
	}
}

func TestRunWatchdogOffSystemdBlocksUntilDone(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	NewNotifier().RunWatchdog(ctx, time.Millisecond, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if el := time.Since(start); el < 40*time.Millisecond {
		t.Errorf("returned after %v, want it to wait for ctx", el)
	}
}
