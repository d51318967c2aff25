package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// options are what a demo run needs from its caller.
type options struct {
	bin        string // holds kilnd and kiln
	images     string // holds tabular-trainer.tar and tabular-server.tar (and torch-digits.tar, for step 7)
	data       string // the breast cancer CSV
	digitsSpec string // examples/pipelines/digits.yaml, for step 7
	out        string // where the accuracy charts go
	containerd string // a containerd's socket (with-containerd's, private)
	ui         bool   // keep kilnd and kiln ui running at the end, until SIGINT or SIGTERM
}

// box is kilnd running on a scratch root against the given containerd,
// in a containerd namespace of its own: everything the demo makes, and all
// that close removes and then checks is gone.
type box struct {
	opt    options
	root   string
	ns     string
	sock   string
	proc   *exec.Cmd
	exited chan error
	t0     time.Time
}

// startBox makes the scratch root (short: socket paths must fit 108 bytes),
// starts kilnd on it and waits until its API answers.
func startBox(ctx context.Context, opt options) (*box, error) {
	for _, f := range []string{filepath.Join(opt.bin, "kilnd"), filepath.Join(opt.bin, "kiln")} {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("%w (make build)", err)
		}
	}
	root, err := os.MkdirTemp("", "kdemo")
	if err != nil {
		return nil, err
	}
	b := &box{opt: opt, root: root, ns: fmt.Sprintf("kiln-demo-%d", os.Getpid()),
		sock: filepath.Join(root, "run/kiln/kiln.sock"), exited: make(chan error, 1), t0: time.Now()}
	conf := filepath.Join(root, "etc/kiln/kiln.yaml")
	if err := os.MkdirAll(filepath.Dir(conf), 0o755); err != nil {
		return nil, errors.Join(err, b.close())
	}
	if err := os.WriteFile(conf, []byte("containerd: {address: "+opt.containerd+", namespace: "+b.ns+"}\n"), 0o644); err != nil {
		return nil, errors.Join(err, b.close())
	}
	logf, err := os.Create(filepath.Join(root, "kilnd.log"))
	if err != nil {
		return nil, errors.Join(err, b.close())
	}
	b.proc = exec.Command(filepath.Join(opt.bin, "kilnd"), "--root", root)
	b.proc.Stdout, b.proc.Stderr = logf, logf
	// A process group of its own: a Ctrl-C at the terminal reaches the
	// demo, which stops kilnd when it is done with it, then cleans up.
	b.proc.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = b.proc.Start()
	_ = logf.Close() // kilnd holds its own copy
	if err != nil {
		b.proc = nil
		return nil, errors.Join(err, b.close())
	}
	go func() { b.exited <- b.proc.Wait() }()
	var st struct{ State string }
	err = b.until(ctx, 30*time.Second, "kilnd's API", func() (bool, error) {
		select {
		case err := <-b.exited:
			b.exited <- err
			return false, fmt.Errorf("kilnd exited at start (%v): %s", err, b.logTail(5))
		default:
		}
		return b.kilnJSON(ctx, &st, "status") == nil && st.State == "ready", nil
	})
	if err != nil {
		return nil, errors.Join(err, b.close())
	}
	return b, nil
}

// kiln runs the CLI against the box with stdin, returning its stdout; an
// error carries its one-line stderr.
func (b *box) kiln(ctx context.Context, stdin io.Reader, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(b.opt.bin, "kiln"), append([]string{"--socket", b.sock}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("kiln %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.Bytes(), nil
}

// kilnJSON runs `kiln ARGS -o json` and decodes its answer into v.
func (b *box) kilnJSON(ctx context.Context, v any, args ...string) error {
	out, err := b.kiln(ctx, nil, append(args, "-o", "json")...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(out, v); err != nil {
		return fmt.Errorf("kiln %s -o json: %w", strings.Join(args, " "), err)
	}
	return nil
}

// until polls cond every 100 ms for up to d; cond's error ends the wait.
func (b *box) until(ctx context.Context, d time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(d)
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not within %s", what, d)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// drop writes data into a drop folder as a writer should: under a name
// ingest ignores, then renamed into place.
func (b *box) drop(folder, name string, data []byte) error {
	dir := filepath.Join(b.root, "var/lib/kiln", folder)
	tmp := filepath.Join(dir, "."+name+".part")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, name))
}

func (b *box) logTail(n int) string {
	data, _ := os.ReadFile(filepath.Join(b.root, "kilnd.log")) // a missing log says nothing
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// close stops kilnd, removes what it left in containerd (stopping kilnd
// never stops its containers, by design) and the scratch root, then checks
// that no container, task, mount or process of the demo remains.
func (b *box) close() error {
	var errs []error
	if b.proc != nil {
		_ = b.proc.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-b.exited:
			if err != nil {
				errs = append(errs, fmt.Errorf("kilnd exit: %w", err))
			}
		case <-time.After(30 * time.Second):
			_ = b.proc.Process.Kill()
			<-b.exited
			errs = append(errs, errors.New("kilnd did not stop within 30s of SIGTERM"))
		}
	}
	errs = append(errs, b.removeContainers())
	if err := os.RemoveAll(b.root); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, b.leftovers())
	return errors.Join(errs...)
}

func (b *box) ctr(args ...string) ([]string, error) {
	out, err := exec.Command("ctr", append([]string{"-a", b.opt.containerd, "-n", b.ns}, args...)...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ctr %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return strings.Fields(string(out)), nil
}

// removeContainers kills and deletes every task and container of the
// demo's namespace, then its images, and the namespace itself.
func (b *box) removeContainers() error {
	ids, err := b.ctr("containers", "ls", "-q")
	if err != nil {
		return err
	}
	for _, id := range ids {
		if _, err := b.ctr("tasks", "kill", "-s", "SIGKILL", id); err == nil {
			_ = b.until(context.Background(), 10*time.Second, "task "+id+" stopped", func() (bool, error) {
				_, err := b.ctr("tasks", "delete", id)
				return err == nil, nil
			})
		}
		_, _ = b.ctr("tasks", "delete", "-f", id) // gone already, most often
		if _, err := b.ctr("containers", "delete", id); err != nil {
			return err
		}
	}
	if imgs, err := b.ctr("images", "ls", "-q"); err == nil && len(imgs) > 0 {
		_, _ = b.ctr(append([]string{"images", "rm", "--sync"}, imgs...)...)
	}
	_, _ = exec.Command("ctr", "-a", b.opt.containerd, "namespaces", "rm", b.ns).CombinedOutput() // refused while anything is left: checked below
	return nil
}

// leftovers names what of the demo is still there: a container or task in
// its namespace, a mount of its root or namespace, a process started with
// either in its command line, or the root itself.
func (b *box) leftovers() error {
	var left []string
	if ids, err := b.ctr("containers", "ls", "-q"); err == nil && len(ids) > 0 {
		left = append(left, "containers "+strings.Join(ids, " "))
	}
	if ids, err := b.ctr("tasks", "ls", "-q"); err == nil && len(ids) > 0 {
		left = append(left, "tasks "+strings.Join(ids, " "))
	}
	if m, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(m), "\n") {
			if f := strings.Fields(line); len(f) > 4 && (strings.HasPrefix(f[4], b.root) || strings.Contains(f[4], "/"+b.ns+"/")) {
				left = append(left, "mount "+f[4])
			}
		}
	}
	// A shim outlives its task briefly.
	_ = b.until(context.Background(), 10*time.Second, "the demo's processes gone", func() (bool, error) {
		return len(b.processes()) == 0, nil
	})
	for _, p := range b.processes() {
		left = append(left, "process "+p)
	}
	if _, err := os.Stat(b.root); err == nil {
		left = append(left, "folder "+b.root)
	}
	if len(left) > 0 {
		return fmt.Errorf("left behind: %s", strings.Join(left, "; "))
	}
	return nil
}

func (b *box) processes() []string {
	var out []string
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		cmdline, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil || len(cmdline) == 0 {
			continue
		}
		args := strings.ReplaceAll(strings.TrimRight(string(cmdline), "\x00"), "\x00", " ")
		if strings.Contains(args, b.root) || strings.Contains(args, " "+b.ns+" ") || strings.HasSuffix(args, " "+b.ns) {
			out = append(out, d.Name()+" "+args)
		}
	}
	return out
}
