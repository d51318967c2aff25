package serve

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// shortDir is a temp dir short enough for unix socket paths.
func shortDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "k")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// testBackend is a real HTTP server on a unix socket, as a serving
// container would be, answering /invocations with one line per input row.
type testBackend struct {
	model   string
	path    string
	srv     *http.Server
	handler http.HandlerFunc // optional override
	delay   time.Duration    // random delay up to this per request
	conns   atomic.Int64     // open connections
	dials   atomic.Int64
}

func (b *testBackend) Model() string { return b.model }

func (b *testBackend) DialContext(ctx context.Context) (net.Conn, error) {
	b.dials.Add(1)
	var d net.Dialer
	return d.DialContext(ctx, "unix", b.path)
}

func startBackend(t testing.TB, model string) *testBackend {
	t.Helper()
	b := &testBackend{model: model, path: filepath.Join(shortDir(t), "b.sock")}
	l, err := net.Listen("unix", b.path)
	if err != nil {
		t.Fatal(err)
	}
	b.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if b.handler != nil {
				b.handler(w, r)
				return
			}
			if b.delay > 0 {
				time.Sleep(rand.N(b.delay))
			}
			body, _ := io.ReadAll(r.Body)
			w.Header().Set("Content-Type", "text/csv")
			w.Header().Set("X-Seen-Request-Id", r.Header.Get(hdrRequestID))
			w.Header().Set("X-Seen-Connection", r.Header.Get("Connection")+r.Header.Get("X-Hop"))
			rows := strings.Count(string(body), "\n")
			fmt.Fprint(w, strings.Repeat(model+"\n", rows))
		}),
		ConnState: func(c net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				b.conns.Add(1)
			case http.StateClosed, http.StateHijacked:
				b.conns.Add(-1)
			}
		},
	}
	go b.srv.Serve(l)
	t.Cleanup(func() { b.srv.Close() })
	return b
}

type testEndpoint struct {
	*Endpoint
	url    string
	client *http.Client
	logDir string
}

func startEndpoint(t testing.TB, opt Options) *testEndpoint {
	t.Helper()
	if opt.Pipeline == "" {
		opt.Pipeline = "iris"
	}
	e, err := New(opt)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- e.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, ErrClosed) {
			t.Errorf("Serve returned %v, want ErrClosed", err)
		}
	})
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	return &testEndpoint{Endpoint: e, url: "http://" + l.Addr().String(), client: &http.Client{Transport: tr}, logDir: opt.PredLogDir}
}

type answer struct {
	status int
	model  string
	id     string
	header http.Header
	body   string
}

func (te *testEndpoint) post(t *testing.T, body string, hdr ...string) answer {
	t.Helper()
	a, err := te.tryPost(body, hdr...)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func (te *testEndpoint) tryPost(body string, hdr ...string) (answer, error) {
	req, err := http.NewRequest(http.MethodPost, te.url+"/invocations", strings.NewReader(body))
	if err != nil {
		return answer{}, err
	}
	req.Header.Set("Content-Type", "text/csv")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := te.client.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return answer{}, fmt.Errorf("read body: %w", err)
	}
	return answer{status: res.StatusCode, model: res.Header.Get(hdrModel), id: res.Header.Get(hdrRequestID),
		header: res.Header, body: string(b)}, nil
}

func TestNoModel503(t *testing.T) {
	te := startEndpoint(t, Options{})
	a := te.post(t, "5.1,3.5,1.4,0.2\n")
	if a.status != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", a.status)
	}
	var eb errorBody
	if err := json.Unmarshal([]byte(a.body), &eb); err != nil {
		t.Fatalf("body %q is not JSON: %v", a.body, err)
	}
	if !strings.Contains(eb.Error, "no live model") || eb.Pipeline != "iris" || eb.RequestID != a.id || a.id == "" {
		t.Errorf("503 body %+v (request id header %q)", eb, a.id)
	}
	if got := a.header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type %q", got)
	}
	if te.Live() != nil {
		t.Errorf("Live() = %v before any flip", te.Live())
	}
	// Flip(nil) takes the model off again.
	b := startBackend(t, "iris/m1")
	te.Flip(b)
	if a := te.post(t, "1\n"); a.status != 200 {
		t.Fatalf("status %d after flip", a.status)
	}
	if prev := te.Flip(nil); prev != b {
		t.Errorf("Flip(nil) returned %v", prev)
	}
	if a := te.post(t, "1\n"); a.status != 503 {
		t.Fatalf("status %d after Flip(nil), want 503", a.status)
	}
	if s := te.Stats(); s.NoModel != 2 || s.Requests != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestProxyHeadersAndRequestID(t *testing.T) {
	te := startEndpoint(t, Options{})
	b := startBackend(t, "iris/m7")
	te.Flip(b)

	a := te.post(t, "5.1,3.5,1.4,0.2\n6.2,2.9,4.3,1.3\n", "Connection", "X-Hop", "X-Hop", "secret")
	if a.status != 200 || a.body != "iris/m7\niris/m7\n" || a.model != "iris/m7" {
		t.Fatalf("got %d %q model %q", a.status, a.body, a.model)
	}
	if a.id == "" || a.header.Get("X-Seen-Request-Id") != a.id {
		t.Errorf("generated id %q, backend saw %q", a.id, a.header.Get("X-Seen-Request-Id"))
	}
	if got := a.header.Get("X-Seen-Connection"); got != "" {
		t.Errorf("hop-by-hop headers reached the backend: %q", got)
	}
	if a.header.Get("Content-Type") != "text/csv" || a.header.Get("Content-Length") != "16" {
		t.Errorf("response headers %v", a.header)
	}
	// Generated ids are distinct.
	if a2 := te.post(t, "1\n"); a2.id == a.id {
		t.Errorf("two requests got the same id %q", a.id)
	}
	// A client's id is kept and propagated; a bad one is replaced.
	a = te.post(t, "1\n", hdrRequestID, "client-42")
	if a.id != "client-42" || a.header.Get("X-Seen-Request-Id") != "client-42" {
		t.Errorf("client id: response %q, backend saw %q", a.id, a.header.Get("X-Seen-Request-Id"))
	}
	a = te.post(t, "1\n", hdrRequestID, "has space "+strings.Repeat("x", 200))
	if strings.Contains(a.id, " ") || a.id == "" || a.header.Get("X-Seen-Request-Id") != a.id {
		t.Errorf("bad client id not replaced: %q", a.id)
	}
	// GET and HEAD pass through (a readiness probe through the endpoint).
	for _, m := range []string{http.MethodGet, http.MethodHead} {
		req, _ := http.NewRequest(m, te.url+"/ping", nil)
		res, err := te.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || res.Header.Get(hdrModel) != "iris/m7" {
			t.Errorf("%s: %d %v", m, res.StatusCode, res.Header)
		}
	}
}

func TestChunkedAndStatusPassThrough(t *testing.T) {
	te := startEndpoint(t, Options{})
	b := startBackend(t, "iris/m2")
	b.handler = func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/stream":
			for i := range 3 {
				fmt.Fprintf(w, "part%d\n", i)
				w.(http.Flusher).Flush()
			}
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/bad":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"error":"3 columns, want 4"}`)
		}
	}
	te.Flip(b)
	for _, tc := range []struct {
		path, body string
		status     int
	}{
		{"/stream", "part0\npart1\npart2\n", 200},
		{"/empty", "", 204},
		{"/bad", `{"error":"3 columns, want 4"}`, 400},
		{"/stream", "part0\npart1\npart2\n", 200}, // and the connection was reusable
	} {
		res, err := te.client.Get(te.url + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil || res.StatusCode != tc.status || string(body) != tc.body {
			t.Errorf("%s: %d %q %v, want %d %q", tc.path, res.StatusCode, body, err, tc.status, tc.body)
		}
	}
	if d := b.dials.Load(); d != 1 {
		t.Errorf("%d dials for 4 sequential requests, want 1 (keep-alive)", d)
	}
}

// TestFlipUnderLoad is the promise of the endpoint: 30 flips between two
// backends under concurrent load, no failed request, every answer from one
// of the two, and every request started after a Flip returned answered by
// the model it flipped to.
func TestFlipUnderLoad(t *testing.T) {
	te := startEndpoint(t, Options{PredLogDir: shortDir(t)})
	ba, bb := startBackend(t, "iris/m1"), startBackend(t, "iris/m2")
	ba.delay, bb.delay = 2*time.Millisecond, 2*time.Millisecond
	backends := []*testBackend{ba, bb}

	// gens[g] is the model live from generation g on; gen is published
	// only after Flip returned.
	const flips = 30
	gens := make([]string, flips+1)
	gens[0] = ba.model
	var gen atomic.Int64
	te.Flip(ba)

	var (
		stop             atomic.Bool
		total, non2xx    atomic.Int64
		wrongModel, late atomic.Int64
		wg               sync.WaitGroup
		firstErr         atomic.Value
	)
	for range 16 {
		wg.Go(func() {
			for !stop.Load() {
				g0 := gen.Load()
				a, err := te.tryPost("5.1,3.5,1.4,0.2\n")
				g1 := gen.Load()
				total.Add(1)
				if err != nil {
					firstErr.CompareAndSwap(nil, err.Error())
					non2xx.Add(1)
					continue
				}
				if a.status/100 != 2 {
					firstErr.CompareAndSwap(nil, fmt.Sprintf("status %d: %s", a.status, a.body))
					non2xx.Add(1)
					continue
				}
				if a.model != ba.model && a.model != bb.model || a.body != a.model+"\n" {
					wrongModel.Add(1)
				}
				ok := false
				for g := g0; g <= g1; g++ {
					ok = ok || a.model == gens[g]
				}
				if !ok {
					late.Add(1)
				}
			}
		})
	}
	time.Sleep(50 * time.Millisecond)
	for i := 1; i <= flips; i++ {
		next := backends[i%2]
		gens[i] = next.model
		prev := te.Flip(next)
		gen.Store(int64(i))
		if prev.Model() != backends[(i+1)%2].model {
			t.Errorf("flip %d returned %s", i, prev.Model())
		}
		// A request made now must be answered by next.
		if a := te.post(t, "1\n"); a.model != next.model {
			t.Errorf("flip %d: request after Flip answered by %s, want %s", i, a.model, next.model)
		}
		time.Sleep(time.Duration(5+rand.N(10)) * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("%d requests across %d flips; stats %+v", total.Load(), flips, te.Stats())
	if n := non2xx.Load(); n != 0 {
		t.Errorf("%d failed requests across flips; first: %v", n, firstErr.Load())
	}
	if n := wrongModel.Load(); n != 0 {
		t.Errorf("%d answers from neither model", n)
	}
	if n := late.Load(); n != 0 {
		t.Errorf("%d requests started after a Flip returned were answered by the old model", n)
	}
	if total.Load() < 200 {
		t.Errorf("only %d requests: the load did not overlap the flips", total.Load())
	}
	// The retired backend keeps no connection from the endpoint once its
	// requests are done; the live one keeps its pool.
	live, retired := backends[flips%2], backends[(flips+1)%2]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := te.WaitIdle(ctx, retired.model); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for retired.conns.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := retired.conns.Load(); n != 0 {
		t.Errorf("retired backend still has %d connections from the endpoint", n)
	}
	if n := live.conns.Load(); n == 0 {
		t.Errorf("live backend has no pooled connection")
	}
	if s := te.Stats(); s.LogDropped != 0 {
		t.Errorf("prediction log dropped %d records", s.LogDropped)
	}
}

func TestBackendFailures(t *testing.T) {
	te := startEndpoint(t, Options{Timeout: 300 * time.Millisecond, PredLogDir: shortDir(t), Pipeline: "iris"})
	b := startBackend(t, "iris/m3")
	release := make(chan struct{})
	b.handler = func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/hangup": // the server dies with the request in flight
			c, _, _ := w.(http.Hijacker).Hijack()
			c.Close()
		case "/half": // dies after half a body
			w.Header().Set("Content-Length", "100")
			w.Write([]byte("0123456789"))
			w.(http.Flusher).Flush()
			c, _, _ := w.(http.Hijacker).Hijack()
			c.Close()
		case "/hang":
			<-release
		}
	}
	te.Flip(b)
	defer close(release)

	check := func(path string, want int) {
		t.Helper()
		start := time.Now()
		res, err := te.client.Post(te.url+path, "text/csv", strings.NewReader("1\n"))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		defer func() {
			// The failure is in the prediction log too: the monitor's
			// probation counts a model's failures from it.
			if err := te.FlushLog(t.Context()); err != nil {
				t.Fatal(err)
			}
			r, err := OpenLogReader(te.logDir, "iris")
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			rec, err := r.Lookup(res.Header.Get(hdrRequestID))
			if err != nil || rec.Status != want || rec.Model != "iris/m3" {
				t.Errorf("%s: logged %+v, %v; want status %d for iris/m3", path, rec, err, want)
			}
		}()
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		var eb errorBody
		if res.StatusCode != want || json.Unmarshal(body, &eb) != nil || eb.Model != "iris/m3" || eb.Error == "" ||
			eb.RequestID != res.Header.Get(hdrRequestID) {
			t.Errorf("%s: %d %q, want %d with a JSON error naming the model", path, res.StatusCode, body, want)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s took %v", path, d)
		}
	}
	check("/hangup", http.StatusBadGateway)
	check("/hang", http.StatusGatewayTimeout)

	// Mid-body failure: the client must see a broken response, not a short one.
	res, err := te.client.Post(te.url+"/half", "text/csv", strings.NewReader("1\n"))
	if err == nil {
		_, err = io.ReadAll(res.Body)
		res.Body.Close()
	}
	if err == nil {
		t.Errorf("/half: truncated answer read without error")
	}

	// The whole backend goes away with requests in flight: 502, no hang.
	b2 := startBackend(t, "iris/m4")
	entered := make(chan struct{}, 8)
	b2.handler = func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
	}
	te.Flip(b2)
	var wg sync.WaitGroup
	codes := make([]int, 4)
	for i := range codes {
		wg.Go(func() {
			a, err := te.tryPost("1\n")
			if err == nil {
				codes[i] = a.status
			}
		})
	}
	for range codes {
		<-entered
	}
	b2.srv.Close() // closes the listener and every connection
	wg.Wait()
	for i, c := range codes {
		if c != http.StatusBadGateway {
			t.Errorf("request %d to a dead backend: %d, want 502", i, c)
		}
	}
	// Dialing a dead backend is a 502 too.
	a := te.post(t, "1\n")
	if a.status != http.StatusBadGateway || !strings.Contains(a.body, "dial") {
		t.Errorf("dead backend: %d %s", a.status, a.body)
	}
	if s := te.Stats(); s.BackendErrors < 6 || s.Aborted != 1 {
		t.Errorf("stats %+v", s)
	}
}

// TestStaleConnRetried: a backend that closes idle keep-alive connections
// (gunicorn does after 2 s) must not fail the next request.
func TestStaleConnRetried(t *testing.T) {
	te := startEndpoint(t, Options{})
	b := startBackend(t, "iris/m5")
	te.Flip(b)
	for i := range 5 {
		if a := te.post(t, "1\n"); a.status != 200 {
			t.Fatalf("request %d: %d %s", i, a.status, a.body)
		}
		// Drop the backend's idle connections (the endpoint's pool still
		// holds them) and let the close reach the endpoint's side.
		b.srv.SetKeepAlivesEnabled(false)
		b.srv.SetKeepAlivesEnabled(true)
		time.Sleep(10 * time.Millisecond)
	}
	if s := te.Stats(); s.BackendErrors != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestWaitIdleAndShutdownDrain(t *testing.T) {
	te := startEndpoint(t, Options{})
	ba, bb := startBackend(t, "iris/m1"), startBackend(t, "iris/m2")
	entered, release := make(chan struct{}), make(chan struct{})
	ba.handler = func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		fmt.Fprint(w, "slow\n")
	}
	te.Flip(ba)
	got := make(chan answer, 1)
	go func() { a, _ := te.tryPost("1\n"); got <- a }()
	<-entered
	te.Flip(bb)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := te.WaitIdle(ctx, "iris/m1"); err == nil {
		t.Fatalf("WaitIdle returned with a request in flight on m1")
	}
	if a := te.post(t, "1\n"); a.model != "iris/m2" {
		t.Errorf("new request went to %s", a.model)
	}
	close(release)
	if a := <-got; a.status != 200 || a.model != "iris/m1" || a.body != "slow\n" {
		t.Errorf("in-flight request: %+v", a)
	}
	if err := te.WaitIdle(context.Background(), "iris/m1"); err != nil {
		t.Fatal(err)
	}
	if err := te.WaitIdle(context.Background(), "iris/m2"); err != nil {
		t.Fatal(err)
	}

	// Shutdown waits for a request in flight.
	entered2, release2 := make(chan struct{}), make(chan struct{})
	bb.handler = func(w http.ResponseWriter, r *http.Request) {
		close(entered2)
		<-release2
		fmt.Fprint(w, "late\n")
	}
	go func() { a, _ := te.tryPost("1\n"); got <- a }()
	<-entered2
	done := make(chan error, 1)
	go func() { done <- te.Shutdown(context.Background()) }()
	time.Sleep(20 * time.Millisecond)
	close(release2)
	if a := <-got; a.status != 200 || a.body != "late\n" {
		t.Errorf("request in flight at Shutdown: %+v", a)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestRequestTooLarge(t *testing.T) {
	te := startEndpoint(t, Options{MaxRequestBytes: 100})
	te.Flip(startBackend(t, "iris/m1"))
	if a := te.post(t, strings.Repeat("1,2,3\n", 100)); a.status != http.StatusRequestEntityTooLarge {
		t.Errorf("status %d, want 413", a.status)
	}
	if a := te.post(t, "1,2,3\n"); a.status != 200 {
		t.Errorf("status %d, want 200", a.status)
	}
}

// TestUnixListenerKept: Serve on a unix socket it did not create and
// Shutdown leave the socket file alone (it may belong to systemd's fd store).
func TestUnixListenerKept(t *testing.T) {
	path := filepath.Join(shortDir(t), "iris.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	e, err := New(Options{Pipeline: "iris"})
	if err != nil {
		t.Fatal(err)
	}
	e.Flip(startBackend(t, "iris/m1"))
	go e.Serve(l)
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(c, "POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n1\n")
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || res.StatusCode != 200 || res.Header.Get(hdrModel) != "iris/m1" {
		t.Fatalf("over the unix socket: %v %v", res, err)
	}
	c.Close()
	if err := e.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("socket file gone after Shutdown: %v", err)
	}
}

func TestNewRejectsBadPipeline(t *testing.T) {
	for _, p := range []string{"", "Iris", "a/b", strings.Repeat("a", 33)} {
		if _, err := New(Options{Pipeline: p}); err == nil {
			t.Errorf("New(%q) succeeded", p)
		}
	}
}
