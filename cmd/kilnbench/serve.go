package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kiln-edge/kiln/daemon/serve"
)

func init() {
	register(Group{Name: "serve", Run: benchServe})
	// The benchmark backend runs in a child process (kilnbench re-executed),
	// as a serving container would: it shares no Go runtime with the proxy.
	if sock := os.Getenv(svBackendEnv); sock != "" {
		os.Exit(svRunBackend(sock))
	}
}

const (
	svBackendEnv = "KILNBENCH_SERVE_BACKEND"
	svModelEnv   = "KILNBENCH_SERVE_MODEL"
	svRow        = "5.1,3.5,1.4,0.2\n"
)

// svRunBackend is the child: a small prediction server on the unix socket
// sock (mode 0777, for nginx's workers) and on a TCP port (for the direct
// baseline), answering every request with one CSV prediction row.
func svRunBackend(sock string) int {
	model := os.Getenv(svModelEnv)
	answer := []byte("Iris-setosa\n")
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // a client that went away is not the backend's problem
		hd := w.Header()
		hd["Content-Type"] = []string{"text/csv"}
		hd["Content-Length"] = []string{"12"}
		hd["X-Backend"] = []string{model}
		_, _ = w.Write(answer)
	})
	ul, err := net.Listen("unix", sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := os.Chmod(sock, 0o777); err != nil { //nolint:gosec // our own scratch socket; nginx's workers run as nobody
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("ready %s\n", tl.Addr())
	srv := &http.Server{Handler: h, ReadHeaderTimeout: time.Minute}
	go func() { _ = srv.Serve(tl) }() // lives as long as the process
	_ = srv.Serve(ul)
	return 0
}

// svBackend is a running child backend.
type svBackend struct {
	model, sock, tcp string
	cmd              *exec.Cmd
}

func (b *svBackend) Model() string { return b.model }

func (b *svBackend) DialContext(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", b.sock)
}

func (b *svBackend) stop() {
	_ = b.cmd.Process.Kill() // the child holds nothing worth a clean stop
	_ = b.cmd.Wait()
}

func svStartBackend(dir, model string) (*svBackend, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	b := &svBackend{model: model, sock: filepath.Join(dir, strings.ReplaceAll(model, "/", "-")+".sock")}
	b.cmd = exec.Command(self)
	b.cmd.Env = append(os.Environ(), svBackendEnv+"="+b.sock, svModelEnv+"="+model)
	b.cmd.Stderr = os.Stderr
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := b.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := b.cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "ready ")
	if err != nil || !ok {
		b.stop()
		return nil, fmt.Errorf("backend %s did not start: %q %v", model, line, err)
	}
	b.tcp = addr
	return b, nil
}

// svEndpoint runs a kiln endpoint on a TCP port, as serve.listen would.
func svEndpoint(dir string, b serve.Backend) (*serve.Endpoint, string, error) {
	e, err := serve.New(serve.Options{Pipeline: "bench", PredLogDir: filepath.Join(dir, "predictions"),
		Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, "", err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	go func() { _ = e.Serve(l) }() // returns ErrClosed at Shutdown
	if b != nil {
		e.Flip(b)
	}
	return e, l.Addr().String(), nil
}

// svShutdown drains the endpoint even when ctx was cancelled (Ctrl-C).
func svShutdown(ctx context.Context, e *serve.Endpoint) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = e.Shutdown(sctx) // the bench is over either way
}

const svNginxConf = `worker_processes 2;
pid {{DIR}}/nginx.pid;
error_log {{DIR}}/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path {{DIR}}/client_temp;
    proxy_temp_path {{DIR}}/proxy_temp;
    fastcgi_temp_path {{DIR}}/fastcgi_temp;
    uwsgi_temp_path {{DIR}}/uwsgi_temp;
    scgi_temp_path {{DIR}}/scgi_temp;
    upstream backend {
        server unix:{{SOCK}};
        keepalive 64;
    }
    server {
        listen {{ADDR}};
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
`

// svStartNginx runs nginx self-contained in dir as a reverse proxy to sock.
func svStartNginx(dir, sock string) (addr string, stop func(), err error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	addr = l.Addr().String()
	_ = l.Close() // nginx takes the port
	ndir := filepath.Join(dir, "nginx")
	if err := os.MkdirAll(ndir, 0o755); err != nil {
		return "", nil, err
	}
	conf := strings.NewReplacer("{{DIR}}", ndir, "{{SOCK}}", sock, "{{ADDR}}", addr).Replace(svNginxConf)
	confPath := filepath.Join(ndir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return "", nil, err
	}
	cmd := exec.Command("nginx", "-p", ndir, "-c", confPath, "-e", filepath.Join(ndir, "error.log"), "-g", "daemon off;")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	stop = func() {
		_ = cmd.Process.Signal(syscall.SIGQUIT) // graceful: workers exit with the master
		select {
		case <-exited:
		case <-time.After(3 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	for deadline := time.Now().Add(5 * time.Second); ; {
		if c, err := net.Dial("tcp", addr); err == nil {
			_ = c.Close()
			return addr, stop, nil
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(ndir, "error.log"))
			return "", nil, fmt.Errorf("nginx exited: %v: %s %s", waitErr, strings.TrimSpace(stderr.String()), strings.TrimSpace(string(log)))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return "", nil, errors.New("nginx did not listen within 5 s")
		}
	}
}

// wrkResult is what svWrk reads from wrk's report.
type wrkResult struct {
	rps    float64
	p50us  float64
	non2xx int64 // non-2xx/3xx responses and socket errors
}

var (
	wrkRPS     = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkP50     = regexp.MustCompile(`(?m)^\s+50%\s+([0-9.]+)(us|ms|s)\s*$`)
	wrkNon2xx  = regexp.MustCompile(`Non-2xx or 3xx responses:\s+(\d+)`)
	wrkSockErr = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// svWrk runs wrk against url with conns connections for d.
func svWrk(ctx context.Context, script, url string, conns int, d time.Duration) (wrkResult, error) {
	secs := max(1, int(d.Round(time.Second)/time.Second))
	out, err := exec.CommandContext(ctx, "wrk", "-t1", fmt.Sprintf("-c%d", conns), fmt.Sprintf("-d%ds", secs),
		"--latency", "-s", script, url).CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk: %v: %s", err, out)
	}
	return parseWrk(string(out))
}

func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	m := wrkRPS.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("no Requests/sec in wrk output: %s", out)
	}
	r.rps, _ = strconv.ParseFloat(m[1], 64)
	m = wrkP50.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("no 50%% latency in wrk output: %s", out)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	switch m[2] {
	case "ms":
		v *= 1e3
	case "s":
		v *= 1e6
	}
	r.p50us = v
	if m := wrkNon2xx.FindStringSubmatch(out); m != nil {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		r.non2xx += n
	}
	if m := wrkSockErr.FindStringSubmatch(out); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.ParseInt(s, 10, 64)
			r.non2xx += n
		}
	}
	return r, nil
}

const svWrkScript = `wrk.method = "POST"
wrk.body = "5.1,3.5,1.4,0.2\n"
wrk.headers["Content-Type"] = "text/csv"
`

// benchServe measures the kiln endpoint against the same backend reached
// directly (TCP) and through nginx (unix socket), alternating targets
// round by round; figures are medians over rounds.
func benchServe(ctx context.Context, opt Options) []Figure {
	const (
		addedName, addedGoal   = "serve.proxy_added_p50_us", "<= 100"
		nginxName, nginxGoal   = "serve.proxy_vs_nginx", ">= 1.0"
		directName, directGoal = "serve.proxy_vs_direct", ">= 0.5"
	)
	fail := func(why string) []Figure {
		return []Figure{unmeasured(addedName, "us", addedGoal, why), unmeasured(nginxName, "x", nginxGoal, why),
			unmeasured(directName, "x", directGoal, why)}
	}
	if _, err := exec.LookPath("wrk"); err != nil {
		return fail("no wrk (make deps installs it)")
	}
	if _, err := exec.LookPath("nginx"); err != nil {
		return fail("no nginx (make deps installs nginx-light)")
	}
	rounds, dur := 3, 5*time.Second
	if opt.Quick {
		rounds, dur = 2, time.Second
	}
	dir, err := os.MkdirTemp("", "kb-serve")
	if err != nil {
		return fail(err.Error())
	}
	defer func() { _ = os.RemoveAll(dir) }()     // best-effort cleanup of scratch files
	if err := os.Chmod(dir, 0o755); err != nil { // nginx's workers (nobody) reach the socket through it
		return fail(err.Error())
	}
	script := filepath.Join(dir, "post.lua")
	if err := os.WriteFile(script, []byte(svWrkScript), 0o644); err != nil {
		return fail(err.Error())
	}
	b, err := svStartBackend(dir, "bench/m1")
	if err != nil {
		return fail(err.Error())
	}
	defer b.stop()
	e, kilnAddr, err := svEndpoint(dir, b)
	if err != nil {
		return fail(err.Error())
	}
	defer svShutdown(ctx, e)
	nginxAddr, stopNginx, err := svStartNginx(dir, b.sock)
	if err != nil {
		return fail(err.Error())
	}
	defer stopNginx()

	targets := []struct{ name, url string }{
		{"direct", "http://" + b.tcp + "/invocations"},
		{"kiln", "http://" + kilnAddr + "/invocations"},
		{"nginx", "http://" + nginxAddr + "/invocations"},
	}
	// Warm every path (pools, JIT-free but page cache and listeners) once.
	for _, t := range targets {
		if _, err := svWrk(ctx, script, t.url, 32, time.Second); err != nil {
			return fail(t.name + ": " + err.Error())
		}
	}
	rps := map[string][]float64{}
	p50 := map[string][]float64{}
	var bad int64
	for r := range rounds {
		for i := range targets {
			t := targets[(i+r)%len(targets)] // rotate the order each round
			hi, err := svWrk(ctx, script, t.url, 32, dur)
			if err != nil {
				return fail(t.name + ": " + err.Error())
			}
			lo, err := svWrk(ctx, script, t.url, 1, dur)
			if err != nil {
				return fail(t.name + ": " + err.Error())
			}
			rps[t.name] = append(rps[t.name], hi.rps)
			p50[t.name] = append(p50[t.name], lo.p50us)
			bad += hi.non2xx + lo.non2xx
		}
	}
	st := e.Stats()
	med := func(m map[string][]float64, k string) float64 { return median(m[k]) }
	fmtK := func(xs []float64) string {
		parts := make([]string, len(xs))
		for i, x := range xs {
			parts[i] = fmt.Sprintf("%.1fk", x/1e3)
		}
		return strings.Join(parts, " ")
	}
	note := fmt.Sprintf("; wrk -t1 %ds, %d rounds alternating; non-2xx/socket errors %d; prediction log written %d dropped %d",
		int(dur/time.Second), rounds, bad, st.LogWritten, st.LogDropped)
	added := med(p50, "kiln") - med(p50, "direct")
	return []Figure{
		measured(addedName, added, "us", addedGoal, fmt.Sprintf("1 conn p50: kiln %.0f us, direct %.0f us, nginx %.0f us%s",
			med(p50, "kiln"), med(p50, "direct"), med(p50, "nginx"), note)),
		measured(nginxName, med(rps, "kiln")/med(rps, "nginx"), "x", nginxGoal,
			fmt.Sprintf("32 conns rps: kiln %s vs nginx %s (2 workers, keepalive 64)%s", fmtK(rps["kiln"]), fmtK(rps["nginx"]), note)),
		measured(directName, med(rps, "kiln")/med(rps, "direct"), "x", directGoal,
			fmt.Sprintf("32 conns rps: kiln %s vs direct %s", fmtK(rps["kiln"]), fmtK(rps["direct"]))),
	}
}
