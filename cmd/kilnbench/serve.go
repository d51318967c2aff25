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
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kiln-edge/kiln/daemon/serve"
	"github.com/kiln-edge/kiln/examples/tabular/images"
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

// svEndpoint runs a kiln endpoint on a unix socket in dir, as kilnd serves
// /run/kiln/serve/<p>.sock, with the prediction log on as a pipeline's
// default monitor.log configures it (inputs: all, keep 14d, max_size 4Gi).
func svEndpoint(dir string, b serve.Backend) (*serve.Endpoint, string, error) {
	e, err := serve.New(serve.Options{Pipeline: "bench", PredLogDir: filepath.Join(dir, "predictions"),
		Protocol: "sagemaker", LogPolicy: serve.LogPolicy{Keep: 14 * 24 * time.Hour, MaxBytes: 4 << 30},
		Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, "", err
	}
	sock := filepath.Join(dir, "kiln.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		_ = e.Shutdown(context.Background())
		return nil, "", err
	}
	go func() { _ = e.Serve(l) }() // returns ErrClosed at Shutdown
	e.Flip(b)
	return e, sock, nil
}

// svShutdown drains the endpoint even when ctx was cancelled (Ctrl-C).
func svShutdown(ctx context.Context, e *serve.Endpoint) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = e.Shutdown(sctx) // the bench is over either way
}

// svNginxConf: as an operator would put nginx in front of the container.
// No keep-alive connection is closed for its request count (nginx closes
// one after 1,000 by default, kiln never). Its workers run as root because the container's socket folder is the
// workload uid's alone (0700) and only root (kilnd) may reach it.
const svNginxConf = `user root;
worker_processes {{WORKERS}};
pid {{DIR}}/nginx.pid;
error_log {{DIR}}/error.log;
events { worker_connections 1024; }
http {
    access_log {{DIR}}/access.log combined buffer=64k;
    keepalive_requests 1000000;
    client_body_temp_path {{DIR}}/client_temp;
    proxy_temp_path {{DIR}}/proxy_temp;
    fastcgi_temp_path {{DIR}}/fastcgi_temp;
    uwsgi_temp_path {{DIR}}/uwsgi_temp;
    scgi_temp_path {{DIR}}/scgi_temp;
    upstream backend {
        server unix:{{SOCK}};
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen unix:{{LISTEN}};
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
`

// svStartNginx runs nginx self-contained in dir as a reverse proxy from
// a unix socket (returned) to sock, one worker per core.
func svStartNginx(dir, sock string) (listen string, pid int, stop func(), err error) {
	ndir := filepath.Join(dir, "nginx")
	if err := os.MkdirAll(ndir, 0o755); err != nil {
		return "", 0, nil, err
	}
	listen = filepath.Join(dir, "nginx.sock")
	conf := strings.NewReplacer("{{DIR}}", ndir, "{{SOCK}}", sock, "{{LISTEN}}", listen,
		"{{WORKERS}}", strconv.Itoa(goruntime.NumCPU())).Replace(svNginxConf)
	confPath := filepath.Join(ndir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return "", 0, nil, err
	}
	cmd := exec.Command("nginx", "-p", ndir, "-c", confPath, "-e", filepath.Join(ndir, "error.log"), "-g", "daemon off;")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return "", 0, nil, err
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
		if c, err := net.Dial("unix", listen); err == nil {
			_ = c.Close()
			return listen, cmd.Process.Pid, stop, nil
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(ndir, "error.log"))
			return "", 0, nil, fmt.Errorf("nginx exited: %v: %s %s", waitErr, strings.TrimSpace(stderr.String()), strings.TrimSpace(string(log)))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return "", 0, nil, errors.New("nginx did not listen within 5 s")
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

// svPath is one way to the backend, reached by the load over a unix socket.
type svPath struct {
	name, sock string
	rps, p50   []float64 // per round: 32 connections rps, 1 connection p50 (us)
	p99        []float64 // per round: 32 connections p99 (us)
	cpu        func() time.Duration
	proxyUS    []float64 // per round: the proxy's CPU per request at 32 connections (us)
	backendUS  []float64 // per round: the backend's
	errs       int64
	firstErr   string
}

// benchServe measures the kiln endpoint (prediction log on, keeping
// inputs) against the same containerised backend reached directly (its
// socket) and through nginx (buffered access log), all three over unix
// sockets from the same load client, alternating the order round by round;
// figures are medians over rounds.
func benchServe(ctx context.Context, opt Options) []Figure {
	const (
		addedName, addedGoal   = "serve.proxy_added_p50_us", "<= 100"
		nginxName, nginxGoal   = "serve.proxy_vs_nginx", ">= 1.0"
		directName, directGoal = "serve.proxy_vs_direct", ">= 0.5"
		conns                  = 32
	)
	fail := func(why string) []Figure {
		return []Figure{unmeasured(addedName, "us", addedGoal, why), unmeasured(nginxName, "x", nginxGoal, why),
			unmeasured(directName, "x", directGoal, why)}
	}
	addr := os.Getenv("KILN_TEST_CONTAINERD")
	if addr == "" {
		return fail("needs a containerd: run under .ci/with-containerd (make bench does)")
	}
	if os.Geteuid() != 0 {
		return fail("needs root for containers")
	}
	if _, err := exec.LookPath("nginx"); err != nil {
		return fail("no nginx (make deps installs nginx-light)")
	}
	rounds, dur := 5, 3*time.Second
	if opt.Quick {
		dur = time.Second
	}
	// On disk, not a tmpfs: the prediction log's fsyncs are real. Short:
	// socket paths must fit 108 bytes.
	dir, err := os.MkdirTemp("/var/tmp", "kbs")
	if err != nil {
		return fail(err.Error())
	}
	defer func() { _ = os.RemoveAll(dir) }() // best-effort cleanup of scratch files
	b, err := svStartContainer(ctx, opt, addr, dir)
	if err != nil {
		return fail(err.Error())
	}
	defer b.stop()
	e, kilnSock, err := svEndpoint(dir, b)
	if err != nil {
		return fail(err.Error())
	}
	defer svShutdown(ctx, e)
	nginxSock, nginxPid, stopNginx, err := svStartNginx(dir, b.sock)
	if err != nil {
		return fail(err.Error())
	}
	defer stopNginx()

	req := []byte(fmt.Sprintf("POST /invocations HTTP/1.1\r\nHost: bench\r\nContent-Type: text/csv\r\nContent-Length: %d\r\n\r\n%s",
		len(b.body), b.body))
	none := func() time.Duration { return 0 }
	paths := []*svPath{{name: "direct", sock: b.sock, cpu: none}, {name: "kiln", sock: kilnSock, cpu: svSelfCPU},
		{name: "nginx", sock: nginxSock, cpu: func() time.Duration { return svCPU(nginxPid) }}}
	backendCPU := func() time.Duration { return svCPU(int(b.task.Pid())) }
	load := func(p *svPath, n int, d time.Duration) (svLoadResult, error) {
		res, err := svLoad(ctx, svLoadSpec{Sock: p.sock, Conns: n, Warm: 300 * time.Millisecond, Dur: d, Request: req})
		if err != nil {
			return res, fmt.Errorf("%s: %w", p.name, err)
		}
		p.errs += res.Errors
		if p.firstErr == "" {
			p.firstErr = res.FirstErr
		}
		return res, nil
	}
	for _, p := range paths { // warm every path (pools, page cache) once
		if _, err := load(p, conns, time.Second); err != nil {
			return fail(err.Error())
		}
	}
	before := e.Stats()
	for r := range rounds {
		for i := range paths {
			p := paths[(i+r)%len(paths)] // rotate the order each round
			stopProf := func() {}
			if p.name == "kiln" && r == 0 {
				stopProf = monProfile("serve-kiln-32")
			}
			c0, b0 := p.cpu(), backendCPU()
			hi, err := load(p, conns, dur)
			c1, b1 := p.cpu(), backendCPU()
			stopProf()
			if err != nil {
				return fail(err.Error())
			}
			lo, err := load(p, 1, dur)
			if err != nil {
				return fail(err.Error())
			}
			p.rps, p.p99, p.p50 = append(p.rps, hi.RPS), append(p.p99, hi.P99us), append(p.p50, lo.P50us)
			perReq := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(hi.Total) }
			p.proxyUS, p.backendUS = append(p.proxyUS, perReq(c1-c0)), append(p.backendUS, perReq(b1-b0))
		}
	}
	if err := e.FlushLog(ctx); err != nil {
		return fail("flush the prediction log: " + err.Error())
	}
	st := e.Stats()
	direct, kiln, nginx := paths[0], paths[1], paths[2]
	var bad []string
	for _, p := range paths {
		if p.errs > 0 {
			bad = append(bad, fmt.Sprintf("%s %d (first: %s)", p.name, p.errs, p.firstErr))
		}
	}
	if bad == nil {
		bad = []string{"none"}
	}
	rng := func(xs []float64, f string) string {
		return fmt.Sprintf(f+" ["+f+"-"+f+"]", median(xs), slices.Min(xs), slices.Max(xs))
	}
	k := func(xs []float64) string {
		return fmt.Sprintf("%.1fk [%.1fk-%.1fk]", median(xs)/1e3, slices.Min(xs)/1e3, slices.Max(xs)/1e3)
	}
	ratios := func(a, b []float64) string {
		rs := make([]float64, len(a))
		for i := range a {
			rs[i] = a[i] / b[i]
		}
		return rng(rs, "%.2f")
	}
	note := fmt.Sprintf("; backend: %s in a container (own netns, unix socket); load: Go closed-loop client in its own process over unix sockets to all three "+
		"(wrk speaks TCP only), %d rounds of %s alternating; non-2xx/transport errors: %s; prediction log (inputs kept, group fsync) wrote %d records, dropped %d, inputs skipped %d",
		images.ServerRef, rounds, dur, strings.Join(bad, ", "), st.LogWritten-before.LogWritten, st.LogDropped-before.LogDropped, st.LogInputsSkipped-before.LogInputsSkipped)
	added := make([]float64, rounds)
	for i := range added {
		added[i] = kiln.p50[i] - direct.p50[i]
	}
	return []Figure{
		measured(addedName, median(kiln.p50)-median(direct.p50), "us", addedGoal,
			fmt.Sprintf("1 conn p50 us, median [min-max] of rounds: kiln %s, direct %s, nginx %s; per-round difference %s%s",
				rng(kiln.p50, "%.0f"), rng(direct.p50, "%.0f"), rng(nginx.p50, "%.0f"), rng(added, "%.0f"), note)),
		measured(nginxName, median(kiln.rps)/median(nginx.rps), "x", nginxGoal,
			fmt.Sprintf("%d conns rps: kiln %s vs nginx %s (%d workers, keepalive 64, access_log buffer=64k); per-round ratio %s; p99 us kiln %s nginx %s; "+
				"CPU us per request: kiln %s, nginx %s, backend %s (behind kiln %s, behind nginx %s, direct %s)%s",
				conns, k(kiln.rps), k(nginx.rps), goruntime.NumCPU(), ratios(kiln.rps, nginx.rps), rng(kiln.p99, "%.0f"), rng(nginx.p99, "%.0f"),
				rng(kiln.proxyUS, "%.1f"), rng(nginx.proxyUS, "%.1f"), rng(slices.Concat(direct.backendUS, kiln.backendUS, nginx.backendUS), "%.0f"),
				rng(kiln.backendUS, "%.0f"), rng(nginx.backendUS, "%.0f"), rng(direct.backendUS, "%.0f"), note)),
		measured(directName, median(kiln.rps)/median(direct.rps), "x", directGoal,
			fmt.Sprintf("%d conns rps: kiln %s vs direct %s; per-round ratio %s; p99 us direct %s",
				conns, k(kiln.rps), k(direct.rps), ratios(kiln.rps, direct.rps), rng(direct.p99, "%.0f"))),
	}
}
