package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/daemon/apiclient"
	"github.com/kiln-edge/kiln/storage"
)

// These tests run the real kilnd and kiln binaries: a fake NOTIFY_SOCKET
// stands in for systemd, the private containerd of `make test` for the
// machine's, and real uids and groups for the API's callers.

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kbin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// go test puts its GOROOT/bin first on PATH.
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	build := exec.Command(goBin, "build", "-o", dir+"/", "github.com/kiln-edge/kiln/cmd/kilnd", "github.com/kiln-edge/kiln/cmd/kiln")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build binaries:", err)
		os.Exit(1)
	}
	// Callers under other uids must reach the binaries.
	_ = os.Chmod(dir, 0o755)
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// needReal skips a test that needs root or a private containerd, unless
// KILN_REQUIRE_REAL=1 (CI), where a missing part is a failure.
func needReal(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("KILN_REQUIRE_REAL") == "1" {
		t.Fatalf("KILN_REQUIRE_REAL=1 but %s", why)
	}
	t.Skip(why)
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		needReal(t, "this test needs root (it runs callers under other uids and creates groups)")
	}
}

func containerdAddr(t *testing.T) string {
	t.Helper()
	addr := os.Getenv("KILN_TEST_CONTAINERD")
	if addr == "" {
		needReal(t, "KILN_TEST_CONTAINERD is not set: run through `make test`, which starts a private containerd")
	}
	return addr
}

// kilnd is one running daemon under a temp root, with its notify socket.
type kilnd struct {
	t      *testing.T
	root   string
	cmd    *exec.Cmd
	notify *net.UnixConn
	stderr *bytes.Buffer
	done   chan error
}

// newRoot makes a short temp root (socket paths must fit 108 bytes) that
// other uids can traverse, with kiln.yaml set to the given text.
func newRoot(t *testing.T, kilnYAML string) string {
	// kilnYAML "" leaves kiln.yaml out: the embedded default applies.
	t.Helper()
	root, err := os.MkdirTemp("", "k")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if kilnYAML != "" {
		writeFile(t, filepath.Join(root, "etc/kiln/kiln.yaml"), kilnYAML)
	}
	return root
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func startKilnd(t *testing.T, root string, args ...string) *kilnd {
	t.Helper()
	sockDir, err := os.MkdirTemp("", "kn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	notifyPath := filepath.Join(sockDir, "n")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	k := &kilnd{t: t, root: root, notify: conn, stderr: &bytes.Buffer{}, done: make(chan error, 1)}
	k.cmd = exec.Command(filepath.Join(binDir, "kilnd"), append([]string{"--root", root}, args...)...)
	k.cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notifyPath)
	k.cmd.Stderr = k.stderr
	if err := k.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { k.done <- k.cmd.Wait() }()
	t.Cleanup(func() {
		_ = k.cmd.Process.Kill()
		<-k.done
		conn.Close()
		if t.Failed() {
			t.Logf("kilnd stderr:\n%s", k.stderr.String())
		}
	})
	return k
}

// expect reads notify datagrams until one contains want.
func (k *kilnd) expect(want string) string {
	k.t.Helper()
	buf := make([]byte, 4096)
	deadline := time.Now().Add(20 * time.Second)
	var seen []string
	for {
		_ = k.notify.SetReadDeadline(deadline)
		n, err := k.notify.Read(buf)
		if err != nil {
			k.t.Fatalf("waiting for %q on NOTIFY_SOCKET: %v; got %q", want, err, seen)
		}
		msg := string(buf[:n])
		seen = append(seen, msg)
		if strings.Contains(msg, want) {
			return msg
		}
	}
}

func (k *kilnd) socket() string { return filepath.Join(k.root, "run/kiln/kiln.sock") }

func (k *kilnd) client() *apiclient.Client { return apiclient.New(k.socket()) }

func (k *kilnd) wait() error {
	select {
	case err := <-k.done:
		k.done <- err
		// Like systemd's fd store, the notify socket holds the endpoint
		// listeners kilnd stored with FDSTORE=1 in its unread datagrams;
		// this fake never hands them back, so it drops them.
		k.notify.Close()
		return err
	case <-time.After(30 * time.Second):
		k.t.Fatal("kilnd did not exit within 30s")
		return nil
	}
}

// kiln runs the CLI against k, as the given credential (nil = as the test).
func (k *kilnd) kiln(cred *syscall.Credential, args ...string) (stdout, stderr string, err error) {
	cmd := exec.Command(filepath.Join(binDir, "kiln"), append([]string{"--socket", k.socket()}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	err = cmd.Run()
	return out.String(), errb.String(), err
}

const goodSpec = `name: pumps
data: {format: csv, label: condition}
train: {image: kiln.local/tabular-trainer:1}
serve: {image: kiln.local/tabular-server:1}
`

func TestLifecycleNotifyAndReload(t *testing.T) {
	addr := containerdAddr(t)
	root := newRoot(t, "containerd: {address: "+addr+"}\n")
	writeFile(t, filepath.Join(root, "etc/kiln/pipelines/pumps.yaml"), goodSpec)
	k := startKilnd(t, root)

	k.expect("READY=1")
	// READY promises the API serves: the first call after it must work.
	st, err := k.client().Status(context.Background())
	if err != nil {
		t.Fatalf("status right after READY=1: %v", err)
	}
	if st.State != "ready" || st.Pipelines != 1 || !st.Containerd.OK {
		t.Errorf("status = state %q, %d pipelines, containerd %+v; want ready, 1, ok", st.State, st.Pipelines, st.Containerd)
	}
	fi, err := os.Stat(k.socket())
	if err != nil || fi.Mode().Perm() != 0o666 {
		t.Errorf("api socket mode: %v %v; want 0666", fi.Mode(), err)
	}

	// SIGHUP reloads: RELOADING=1 with MONOTONIC_USEC, then READY=1 again.
	writeFile(t, filepath.Join(root, "etc/kiln/pipelines/fans.yaml"), strings.ReplaceAll(goodSpec, "pumps", "fans"))
	if err := k.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if msg := k.expect("RELOADING=1"); !strings.Contains(msg, "MONOTONIC_USEC=") {
		t.Errorf("RELOADING message %q lacks MONOTONIC_USEC", msg)
	}
	k.expect("READY=1")
	ps, err := k.client().Pipelines(context.Background())
	if err != nil || len(ps) != 2 {
		t.Fatalf("pipelines after SIGHUP = %v, %v; want 2", ps, err)
	}

	// A bad spec is rejected with file:line and the old set keeps running.
	writeFile(t, filepath.Join(root, "etc/kiln/pipelines/fans.yaml"), "name: fans\ndata: {format: csvv, label: x}\ntrain: {image: a}\nserve: {image: b}\n")
	_, stderr, err := k.kiln(nil, "pipelines", "reload")
	if err == nil || !strings.Contains(stderr, "fans.yaml:2:") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Errorf("reload of a bad spec: err %v, stderr %q; want a failure naming fans.yaml:2 on one line", err, stderr)
	}
	checkRejected(t, k, root)
	doc, err := k.client().Doctor(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if c := findCheck(doc, "pipelines"); c.Result != api.CheckFail || !strings.Contains(c.Detail, "fans.yaml") {
		t.Errorf("doctor pipelines check = %+v; want fail naming fans.yaml", c)
	}

	// A change in the folder reloads on its own.
	if err := os.Remove(filepath.Join(root, "etc/kiln/pipelines/fans.yaml")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "folder change to drop fans", func() bool {
		ps, err := k.client().Pipelines(context.Background())
		return err == nil && len(ps) == 1 && ps[0].Pipeline == "pumps"
	})
	checkReloadOK(t, k)

	// SIGTERM: STOPPING=1, a clean exit, the socket gone for good.
	if err := k.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	k.expect("STOPPING=1")
	if err := k.wait(); err != nil {
		t.Fatalf("kilnd exit after SIGTERM: %v", err)
	}
}

func findCheck(d api.Doctor, name string) api.Check {
	for _, c := range d.Checks {
		if c.Name == name {
			return c
		}
	}
	return api.Check{}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestDoctorAndVersion(t *testing.T) {
	addr := containerdAddr(t)
	root := newRoot(t, "containerd: {address: "+addr+"}\n")
	k := startKilnd(t, root)
	k.expect("READY=1")

	out, stderr, err := k.kiln(nil, "doctor", "-o", "json")
	if err != nil {
		t.Fatalf("kiln doctor: %v (%s)", err, stderr)
	}
	var doc api.Doctor
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"containerd": api.CheckOK, "state-dir": api.CheckOK, "api-socket": api.CheckOK,
		"nvml": api.CheckWarn, "pipelines": api.CheckOK, "store": api.CheckOK}
	for name, result := range want {
		if c := findCheck(doc, name); c.Result != result {
			t.Errorf("doctor check %s = %+v; want %s", name, c, result)
		}
	}
	if c := findCheck(doc, "containerd"); !strings.Contains(c.Detail, "1.") {
		t.Errorf("containerd check %q does not name the version", c.Detail)
	}
	if c := findCheck(doc, "nvml"); c.Detail != "no NVIDIA driver: CPU-only" || c.Fix == "" {
		t.Errorf("nvml check = %+v; want the CPU-only message with a fix", c)
	}

	out, _, err = k.kiln(nil, "version")
	if err != nil || !strings.Contains(out, "kiln ") || !strings.Contains(out, "kilnd ") {
		t.Errorf("kiln version = %q, %v; want client and daemon lines", out, err)
	}
}

func TestContainerdDownKeepsKilndUp(t *testing.T) {
	root := newRoot(t, "containerd: {address: /nonexistent/containerd.sock}\n")
	k := startKilnd(t, root)
	k.expect("READY=1")
	out, _, err := k.kiln(nil, "doctor")
	if err == nil || !strings.Contains(out, "FAIL  containerd") || !strings.Contains(out, "systemctl start containerd") {
		t.Errorf("doctor with containerd down: %v\n%s\nwant a failing containerd line with a fix", err, out)
	}
	if st, err := k.client().Status(context.Background()); err != nil || st.Containerd.OK || st.State != "ready" {
		t.Errorf("status with containerd down = %+v, %v; want ready and containerd not ok", st, err)
	}
}

func TestPeerCredentialAuthz(t *testing.T) {
	needRoot(t)
	readGroup, adminGroup := "kilntr", "kilnta"
	readGID := addGroup(t, readGroup)
	adminGID := addGroup(t, adminGroup)
	const nobodyGID = 65534
	root := newRoot(t, fmt.Sprintf("containerd: {address: /nonexistent.sock}\ngroups: {read: %s, admin: %s}\n", readGroup, adminGroup))
	k := startKilnd(t, root)
	k.expect("READY=1")

	reader := &syscall.Credential{Uid: 64101, Gid: nobodyGID, Groups: []uint32{readGID}}
	admin := &syscall.Credential{Uid: 64102, Gid: nobodyGID, Groups: []uint32{adminGID}}
	stranger := &syscall.Credential{Uid: 64103, Gid: nobodyGID}
	for _, tc := range []struct {
		name    string
		cred    *syscall.Credential
		args    []string
		wantErr string // "" = allowed
	}{
		{"root reads", nil, []string{"status"}, ""},
		{"root writes", nil, []string{"pipelines", "reload"}, ""},
		{"reader reads", reader, []string{"status"}, ""},
		{"reader cannot write", reader, []string{"pipelines", "reload"}, `needs root or membership in group "kilnta"`},
		{"reader's gc dry run is a read", reader, []string{"gc", "--dry-run"}, ""},
		{"reader cannot collect", reader, []string{"gc"}, `needs root or membership in group "kilnta"; run it with sudo, or ask an admin to add you: usermod -aG kilnta USER`},
		{"admin-only reads", admin, []string{"status"}, ""},
		{"admin reads", admin, []string{"pipelines"}, ""},
		{"admin writes", admin, []string{"pipelines", "reload"}, ""},
		{"stranger cannot read", stranger, []string{"status"}, `neither group "kilntr" nor "kilnta"`},
		{"stranger cannot write", stranger, []string{"pipelines", "reload"}, `group "kilnta"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, err := k.kiln(tc.cred, tc.args...)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("kiln %v: %v: %s", tc.args, err, stderr)
				}
				return
			}
			if err == nil || !strings.Contains(stderr, tc.wantErr) || !strings.Contains(stderr, "permission denied") {
				t.Fatalf("kiln %v: err %v, stderr %q; want a refusal containing %q", tc.args, err, stderr, tc.wantErr)
			}
		})
	}
	// The refused and allowed writes are told apart in the audit log.
	evs, err := k.client().Events(context.Background(), 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	actors := map[string]bool{}
	for _, e := range evs {
		actors[e.Actor] = true
	}
	if !actors["kilnd"] {
		t.Errorf("events actors %v; want kilnd's own start event", actors)
	}
}

func addGroup(t *testing.T, name string) uint32 {
	t.Helper()
	_ = exec.Command("groupdel", name).Run() // left by an interrupted run
	if out, err := exec.Command("groupadd", name).CombinedOutput(); err != nil {
		t.Fatalf("groupadd %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("groupdel", name).Run() })
	out, err := exec.Command("getent", "group", name).Output()
	if err != nil {
		t.Fatal(err)
	}
	var gid uint32
	if _, err := fmt.Sscanf(strings.Split(string(out), ":")[2], "%d", &gid); err != nil {
		t.Fatal(err)
	}
	return gid
}

func TestBadInputOneLineErrors(t *testing.T) {
	longRoot := "/tmp/" + strings.Repeat("x", 100)
	tests := []struct {
		name  string
		setup func(t *testing.T) (root string, args []string)
		want  string
	}{
		{"malformed config", func(t *testing.T) (string, []string) {
			return newRoot(t, "containerd:\n  adress: /x\n"), nil
		}, "kiln.yaml:2:3: containerd.adress"},
		{"socket path too long", func(t *testing.T) (string, []string) {
			return newRoot(t, ""), []string{"--run-dir", longRoot}
		}, "unix sockets allow at most 107"},
		{"socket path is a regular file", func(t *testing.T) (string, []string) {
			root := newRoot(t, "")
			writeFile(t, filepath.Join(root, "run/kiln/kiln.sock"), "precious")
			return root, nil
		}, "is not a socket"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root, args := tc.setup(t)
			out, err := exec.Command(filepath.Join(binDir, "kilnd"), append([]string{"--root", root}, args...)...).CombinedOutput()
			msg := strings.TrimSpace(string(out))
			var exit *exec.ExitError
			if !errors.As(err, &exit) || !strings.Contains(msg, tc.want) {
				t.Fatalf("kilnd: err %v, output %q; want a non-zero exit with %q", err, msg, tc.want)
			}
			if lines := strings.Split(msg, "\n"); !strings.HasPrefix(lines[len(lines)-1], "kilnd: ") {
				t.Errorf("last line %q is not kilnd's one-line error", lines[len(lines)-1])
			}
		})
	}
	t.Run("regular file kept", func(t *testing.T) {
		root := newRoot(t, "")
		p := filepath.Join(root, "run/kiln/kiln.sock")
		writeFile(t, p, "precious")
		_ = exec.Command(filepath.Join(binDir, "kilnd"), "--root", root).Run()
		if b, err := os.ReadFile(p); err != nil || string(b) != "precious" {
			t.Errorf("file at the socket path was changed: %q, %v", b, err)
		}
	})
}

func TestSecondKilndOnSameRoot(t *testing.T) {
	root := newRoot(t, "containerd: {address: /nonexistent.sock}\nstore_lock_timeout: 300ms\n")
	k := startKilnd(t, root)
	k.expect("READY=1")
	out, err := exec.Command(filepath.Join(binDir, "kilnd"), "--root", root).CombinedOutput()
	msg := strings.TrimSpace(string(out))
	if err == nil || !strings.Contains(msg, filepath.Join(root, "var/lib/kiln/kiln.db")) || !strings.Contains(msg, "lock") {
		t.Fatalf("second kilnd: err %v, output %q; want a lock error naming the db", err, msg)
	}
	// The first one is unharmed.
	if _, err := k.client().Status(context.Background()); err != nil {
		t.Errorf("first kilnd after the second was refused: %v", err)
	}
}

func TestStateDirNotWritable(t *testing.T) {
	needRoot(t)
	root := newRoot(t, "")
	state := filepath.Join(root, "var/lib/kiln")
	if err := os.MkdirAll(state, 0o755); err != nil {
		t.Fatal(err)
	}
	// Root writes through modes, so a read-only mount is the honest test.
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", state).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", state).Run() })
	out, err := exec.Command(filepath.Join(binDir, "kilnd"), "--root", root).CombinedOutput()
	msg := strings.TrimSpace(string(out))
	if err == nil || !strings.Contains(msg, state) || !strings.Contains(msg, "read-only") {
		t.Fatalf("kilnd on a read-only state dir: err %v, output %q; want an error naming %s", err, msg, state)
	}
}

// holdDrain opens an API connection and sends half a request, which keeps
// the connection active so the drain has something to wait for.
func holdDrain(t *testing.T, k *kilnd) {
	t.Helper()
	c, err := net.Dial("unix", k.socket())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte("GET /v1/status HTTP/1.1\r\nHost: k\r\n")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let the server read it
}

func TestSecondSignalForcesExit(t *testing.T) {
	root := newRoot(t, "containerd: {address: /nonexistent.sock}\nshutdown_timeout: 60s\n")
	k := startKilnd(t, root)
	k.expect("READY=1")
	holdDrain(t, k)
	_ = k.cmd.Process.Signal(syscall.SIGTERM)
	k.expect("STOPPING=1")
	select {
	case err := <-k.done:
		t.Fatalf("kilnd exited (%v) while a request was still draining", err)
	case <-time.After(time.Second):
	}
	t0 := time.Now()
	_ = k.cmd.Process.Signal(syscall.SIGTERM)
	err := k.wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("kilnd after a second SIGTERM: %v; want death by SIGTERM", err)
	}
	if ws := exit.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGTERM || time.Since(t0) > 2*time.Second {
		t.Fatalf("kilnd after a second SIGTERM: %v after %s; want death by SIGTERM at once", err, time.Since(t0))
	}
}

func TestDrainTimeoutForcesExit(t *testing.T) {
	root := newRoot(t, "containerd: {address: /nonexistent.sock}\nshutdown_timeout: 300ms\n")
	k := startKilnd(t, root)
	k.expect("READY=1")
	holdDrain(t, k)
	t0 := time.Now()
	_ = k.cmd.Process.Signal(syscall.SIGTERM)
	err := k.wait()
	if err == nil || time.Since(t0) > 3*time.Second || !strings.Contains(k.stderr.String(), "drain cut after 300ms") {
		t.Fatalf("kilnd with a stuck request: %v after %s, stderr %q; want a non-zero exit after the 300ms drain timeout",
			err, time.Since(t0), k.stderr.String())
	}
}

func TestWatchdogPings(t *testing.T) {
	root := newRoot(t, "containerd: {address: /nonexistent.sock}\n")
	t.Setenv("WATCHDOG_USEC", "400000") // 0.4 s: pings every 0.2 s
	k := startKilnd(t, root)
	k.expect("READY=1")
	t0 := time.Now()
	k.expect("WATCHDOG=1")
	k.expect("WATCHDOG=1")
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("two watchdog pings took %s; want about 0.4s (half of WatchdogSec each)", d)
	}
}

// TestSocketActivation hands kilnd its API socket the way systemd does
// (kilnd.socket): an inherited fd named by LISTEN_FDNAMES, with LISTEN_PID set
// to kilnd's own pid by the shell that execs it.
func TestSocketActivation(t *testing.T) {
	root := newRoot(t, "containerd: {address: /nonexistent.sock}\n")
	sockDir, err := os.MkdirTemp("", "ks")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "api.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	f, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=api exec "$0" "$@"`,
		filepath.Join(binDir, "kilnd"), "--root", root)
	cmd.ExtraFiles = []*os.File{f}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	l.SetUnlinkOnClose(false) // the socket file is kilnd's now
	l.Close()                 // kilnd holds its own copy of the listening socket
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	c := apiclient.New(sock)
	waitFor(t, "status over the activated socket", func() bool {
		_, err := c.Status(context.Background())
		return err == nil
	})
	if _, err := os.Stat(filepath.Join(root, "run/kiln/kiln.sock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("kilnd created its own socket too (stat: %v); want only the activated one", err)
	}
	if !strings.Contains(stderr.String(), "socket-activated") {
		t.Errorf("kilnd log does not mention the activated socket:\n%s", stderr.String())
	}
}

// TestBackupEventsGPUAndMetrics drives the read side of the CLI against a
// live kilnd: a backup that opens and verifies as a store, events followed
// as they happen, the CPU-only GPU report, and metrics on both listeners.
func TestBackupEventsGPUAndMetrics(t *testing.T) {
	port := freePort(t)
	root := newRoot(t, fmt.Sprintf("containerd: {address: /nonexistent.sock}\nmetrics: {listen: '127.0.0.1:%d'}\n", port))
	k := startKilnd(t, root)
	k.expect("READY=1")

	// kiln events -f sees an event raised after it started following.
	follow := exec.Command(filepath.Join(binDir, "kiln"), "--socket", k.socket(), "events", "-f", "-o", "json")
	var followOut syncBuffer
	follow.Stdout = &followOut
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = follow.Process.Kill(); _ = follow.Wait() })
	waitFor(t, "the start event on the followed stream", func() bool { return strings.Contains(followOut.String(), `"kilnd.started"`) })
	writeFile(t, filepath.Join(root, "etc/kiln/pipelines/pumps.yaml"), goodSpec)
	if _, stderr, err := k.kiln(nil, "pipelines", "reload"); err != nil {
		t.Fatalf("reload: %v: %s", err, stderr)
	}
	waitFor(t, "the reload event on the followed stream", func() bool { return strings.Contains(followOut.String(), `"pipelines.reloaded"`) })

	backup := filepath.Join(t.TempDir(), "kiln.db")
	out, stderr, err := k.kiln(nil, "backup", backup)
	if err != nil {
		t.Fatalf("kiln backup: %v: %s", err, stderr)
	}
	if !strings.Contains(out, "blobs folder") {
		t.Errorf("kiln backup output %q does not mention the blob folder, the other half of a backup", out)
	}
	s, err := storage.Open(filepath.Dir(backup), storage.Options{LockTimeout: time.Second})
	if err != nil {
		t.Fatalf("open the backup as a store: %v", err)
	}
	if err := s.Verify(context.Background()); err != nil {
		t.Errorf("backup's event chain: %v", err)
	}
	if seq, _ := s.Head(); seq < 2 {
		t.Errorf("backup holds %d events; want the start and reload events", seq)
	}
	s.Close()

	out, _, err = k.kiln(nil, "gpu")
	if err != nil || !strings.Contains(out, "no NVIDIA driver: CPU-only") {
		t.Errorf("kiln gpu here = %q, %v; want the CPU-only message", out, err)
	}

	m, err := k.client().Metrics(context.Background())
	if err != nil || !strings.Contains(m, "kiln_pipelines_loaded 1") || !strings.Contains(m, "kiln_gpu_available 0") {
		t.Errorf("metrics on the API socket: %v\n%s", err, m)
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		t.Fatalf("metrics on the TCP listener: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "kiln_build_info") {
		t.Errorf("TCP /metrics = %d\n%s", resp.StatusCode, body)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// syncBuffer is a bytes.Buffer a child process writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
