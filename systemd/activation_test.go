package systemd

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const helperEnv = "KILN_SYSTEMD_TEST_HELPER"

// TestHelperProcess is the socket-activated child of TestListenersActivated; on its own it
// does nothing. It reports what it was handed, then echoes one line on the "api" listener.
func TestHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		return // only a helper, run by TestListenersActivated
	}
	ls, err := Listeners()
	if err != nil {
		t.Fatalf("Listeners: %v", err)
	}
	again, _ := Listeners()
	files, err := Files()
	if err != nil {
		t.Fatalf("Files: %v", err)
	}
	state, err := io.ReadAll(files["state"][0])
	if err != nil {
		t.Fatalf("read state fd: %v", err)
	}
	conn, err := ls["api"][0].Accept()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	defer conn.Close()
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	fmt.Fprintf(conn, "listeners=%s files=%s same=%v env=%q state=%s echo=%s",
		strings.Join(slices.Sorted(maps.Keys(ls)), ","), strings.Join(slices.Sorted(maps.Keys(files)), ","),
		reflect.ValueOf(ls).Pointer() == reflect.ValueOf(again).Pointer(),
		os.Getenv("LISTEN_FDS"), state, line)
}

// TestListenersActivated hands a real listener and a state file to a child the way systemd
// does (fds 3 and 4, LISTEN_PID set to the child's own pid by sh before exec).
func TestListenersActivated(t *testing.T) {
	dir, err := os.MkdirTemp("", "k")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "api.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	lf, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	statePath := filepath.Join(dir, "state")
	if err := os.WriteFile(statePath, []byte("restored"), 0o600); err != nil {
		t.Fatal(err)
	}
	sf, err := os.Open(statePath)
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()

	cmd := exec.CommandContext(t.Context(), "sh", "-c",
		`LISTEN_PID=$$ LISTEN_FDS=2 LISTEN_FDNAMES=api:state exec "$0" "$@"`,
		os.Args[0], "-test.run=^TestHelperProcess$", "-test.v")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	cmd.ExtraFiles = []*os.File{lf, sf}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}

	conn, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, "hello\n"); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v\n%s", err, out.String())
	}
	want := `listeners=api files=state same=true env="" state=restored echo=hello` + "\n"
	if diff := cmp.Diff(want, string(got)); diff != "" {
		t.Errorf("child's report (-want +got):\n%s\nchild output:\n%s", diff, out.String())
	}
}

func TestListenersOffSystemd(t *testing.T) {
	if os.Getenv("LISTEN_FDS") != "" {
		t.Skip("running socket-activated")
	}
	ls, err := Listeners()
	if err != nil || len(ls) != 0 || ls == nil {
		t.Errorf("Listeners() = %v, %v; want an empty map, nil", ls, err)
	}
	fs, err := Files()
	if err != nil || len(fs) != 0 || fs == nil {
		t.Errorf("Files() = %v, %v; want an empty map, nil", fs, err)
	}
}
