package systemd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestJournalField(t *testing.T) {
	tests := []struct{ key, want string }{
		{"pipeline", "PIPELINE"},
		{"RUN", "RUN"},
		{"gpu_uuid", "GPU_UUID"},
		{"gpu-uuid", "GPU_UUID"},
		{"model.version", "MODEL_VERSION"},
		{"_hidden", "HIDDEN"},
		{"9lives", "ATTR_9LIVES"},
		{"", "ATTR"},
		{"-", "ATTR"},
		{"é", "ATTR"},
		{strings.Repeat("a", 70), strings.Repeat("A", 64)},
	}
	for _, tt := range tests {
		if got := journalField(tt.key); got != tt.want {
			t.Errorf("journalField(%q) = %q, want %q", tt.key, got, tt.want)
		}
	}
}

func TestIsJournalStream(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "stream"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	tests := []struct {
		env  string
		want bool
	}{
		{"", false},
		{fmt.Sprintf("%d:%d", st.Dev, st.Ino), true},
		{fmt.Sprintf("%d:%d", st.Dev, st.Ino+1), false},
		{"garbage", false},
	}
	for _, tt := range tests {
		t.Setenv("JOURNAL_STREAM", tt.env)
		if got := isJournalStream(f); got != tt.want {
			t.Errorf("JOURNAL_STREAM=%q: got %v, want %v", tt.env, got, tt.want)
		}
	}
}

func TestNewLogHandlerOffJournald(t *testing.T) {
	if _, err := os.Stat("/run/systemd/journal/socket"); err != nil && JournalEnabled() {
		t.Errorf("JournalEnabled() = true without journald's socket (%v)", err)
	}
	var buf bytes.Buffer
	log := slog.New(NewLogHandler(&buf, slog.LevelInfo))
	log.Debug("hidden")
	log.With("pipeline", "pumps").Info("run started", "run", "r1")
	got := buf.String()
	for _, want := range []string{`msg="run started"`, "pipeline=pumps", "run=r1"} {
		if !strings.Contains(got, want) {
			t.Errorf("log %q: want it to contain %q", got, want)
		}
	}
	if strings.Contains(got, "hidden") {
		t.Errorf("log %q: debug record passed an info level", got)
	}
}

const journalHelperEnv = "KILN_SYSTEMD_JOURNAL_HELPER"

// TestJournalFields runs TestJournalHelper in a private mount namespace whose /run is a
// tmpfs, where the helper plays journald: it binds /run/systemd/journal/socket and checks
// the fields kilnd's handler sends there. Needs root and unshare(1).
func TestJournalFields(t *testing.T) {
	if os.Getuid() != 0 || exec.Command("unshare", "-m", "true").Run() != nil {
		if os.Getenv("KILN_REQUIRE_REAL") == "1" {
			t.Fatal("needs root and unshare -m (KILN_REQUIRE_REAL=1)")
		}
		t.Skip("needs root and unshare -m for a private /run")
	}
	cmd := exec.CommandContext(t.Context(), "unshare", "-m", "sh", "-c",
		`mount -t tmpfs tmpfs /run && exec "$0" "$@"`, os.Args[0], "-test.run=^TestJournalHelper$", "-test.v")
	cmd.Env = append(os.Environ(), journalHelperEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("--- PASS: TestJournalHelper")) {
		t.Errorf("helper: %v\n%s", err, out)
	}
}

func TestJournalHelper(t *testing.T) {
	if os.Getenv(journalHelperEnv) != "1" {
		return // only a helper, run by TestJournalFields
	}
	if err := os.MkdirAll("/run/systemd/journal", 0o755); err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: "/run/systemd/journal/socket", Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !JournalEnabled() {
		t.Fatal("JournalEnabled() = false with a journald socket")
	}
	fi, err := os.Stderr.Stat()
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))

	log := slog.New(NewLogHandler(os.Stderr, slog.LevelInfo))
	log.With("pipeline", "pumps").Warn("run failed", "run", "r1", "gpu-uuid", "GPU-1", "message", "m", slog.Group("http", "status", 500))
	buf := make([]byte, 65536)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSuffix(string(buf[:n]), "\n"), "\n") {
		k, v, _ := strings.Cut(line, "=")
		got[k] = v
	}
	for k, v := range map[string]string{
		"MESSAGE": "run failed", "PRIORITY": "4", "PIPELINE": "pumps", "RUN": "r1",
		"GPU_UUID": "GPU-1", "ATTR_MESSAGE": "m", "HTTP_STATUS": "500",
	} {
		if got[k] != v {
			t.Errorf("field %s = %q, want %q (datagram %q)", k, got[k], v, buf[:n])
		}
	}

	// The cause of an error is in MESSAGE, which plain journalctl shows, and
	// stays a field; a multi-line one becomes one line.
	log.Error("reload rejected", "err", errors.New("a.yaml:2: data.format: bad\nb.yaml:1: name: bad"))
	n, err = c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	fields := journalFields(buf[:n])
	if want := "reload rejected: a.yaml:2: data.format: bad; b.yaml:1: name: bad"; fields["MESSAGE"] != want {
		t.Errorf("MESSAGE = %q, want %q (datagram %q)", fields["MESSAGE"], want, buf[:n])
	}
	if !strings.HasPrefix(fields["ERR"], "a.yaml:2:") {
		t.Errorf("ERR = %q, want the error (datagram %q)", fields["ERR"], buf[:n])
	}
}

// journalFields decodes journald's native datagram: KEY=value lines, or
// KEY\n<64-bit little-endian length><value>\n for values with a newline.
func journalFields(b []byte) map[string]string {
	out := map[string]string{}
	for len(b) > 0 {
		i := bytes.IndexAny(b, "=\n")
		if i < 0 {
			break
		}
		key := string(b[:i])
		if b[i] == '=' {
			end := bytes.IndexByte(b[i+1:], '\n')
			if end < 0 {
				end = len(b) - i - 1
			}
			out[key] = string(b[i+1 : i+1+end])
			b = b[min(len(b), i+2+end):]
			continue
		}
		if len(b) < i+9 {
			break
		}
		size := int(binary.LittleEndian.Uint64(b[i+1 : i+9]))
		if len(b) < i+9+size {
			break
		}
		out[key] = string(b[i+9 : i+9+size])
		b = b[min(len(b), i+10+size):]
	}
	return out
}
