package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/daemon/api"
)

// Hostile callers of the control API (issue 13): the socket is 0666, so any local process
// can connect, however badly it behaves, before peer credentials say what it may do. Who may
// read and write is TestPeerCredentialAuthz's; this file is about what callers send.

// procFigures are kilnd's own figures, from its /metrics (the Go and process collectors).
type procFigures struct{ goroutines, rssMiB, fds float64 }

func (f procFigures) String() string {
	return fmt.Sprintf("%.0f goroutines, %.1f MiB RSS, %.0f fds", f.goroutines, f.rssMiB, f.fds)
}

func kilndFigures(t *testing.T, hc *http.Client) procFigures {
	t.Helper()
	resp, err := hc.Get("http://kiln" + api.PathMetrics)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	var f procFigures
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		x, err := strconv.ParseFloat(val, 64)
		if !ok || err != nil {
			continue
		}
		switch name {
		case "go_goroutines":
			f.goroutines = x
		case "process_resident_memory_bytes":
			f.rssMiB = x / (1 << 20)
		case "process_open_fds":
			f.fds = x
		}
	}
	if f.goroutines == 0 || f.rssMiB == 0 {
		t.Fatalf("metrics lack go_goroutines or process_resident_memory_bytes")
	}
	return f
}

// statusWithin fails unless GET /v1/status answers 200 within limit, on a fresh connection
// (a new caller arriving while the hostile ones hold theirs).
func statusWithin(t *testing.T, sock string, limit time.Duration, during string) time.Duration {
	t.Helper()
	hc := endpointClient(sock)
	hc.Timeout = limit
	defer hc.CloseIdleConnections()
	start := time.Now()
	resp, err := hc.Get("http://kiln" + api.PathStatus)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("status during %s: %v after %v; want an answer within %v", during, err, took, limit)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || took > limit {
		t.Fatalf("status during %s: %d after %v; want 200 within %v", during, resp.StatusCode, took, limit)
	}
	return took
}

// apiError checks an error answer: the status, and a JSON body whose message is one line.
func apiError(t *testing.T, resp *http.Response, err error, status int, want string) {
	t.Helper()
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e api.Error
	if resp.StatusCode != status || json.Unmarshal(b, &e) != nil || e.Error == "" || strings.ContainsAny(e.Error, "\r\n") || !strings.Contains(e.Error, want) {
		t.Fatalf("got %d %q; want %d with a one-line JSON error containing %q", resp.StatusCode, b, status, want)
	}
}

func TestHostileAPICallers(t *testing.T) {
	needRoot(t) // kilnd's peer-credential checks and the fd counts of 2,000 streams
	k := startKilnd(t, newRoot(t, "containerd: {address: /nonexistent.sock}\n"))
	k.expect("READY=1")
	sock := k.socket()
	hc := endpointClient(sock)
	purge := "http://kiln" + strings.Replace(api.PathPredictionsPurge, "{name}", "pumps", 1)
	base := kilndFigures(t, hc)
	t.Logf("baseline: %s", base)

	// Slow clients first, so they hang on through the rest: heads that never end, and a
	// body sent a byte at a time.
	const slow = 100
	var slowConns []net.Conn
	for i := range slow {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		head := "GET /v1/status HTTP/1.1\r\nHost: kiln\r\nX-Slow: "
		if i == 0 {
			head = "POST " + strings.TrimPrefix(purge, "http://kiln") + " HTTP/1.1\r\nHost: kiln\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
		}
		if _, err := io.WriteString(c, head); err != nil {
			t.Fatal(err)
		}
		slowConns = append(slowConns, c)
	}
	slowSince := time.Now()
	stopDrip := make(chan struct{})
	var drip sync.WaitGroup
	drip.Add(1)
	go func() { // the slow body: one byte every 200 ms
		defer drip.Done()
		for {
			select {
			case <-stopDrip:
				return
			case <-time.After(200 * time.Millisecond):
				if _, err := slowConns[0].Write([]byte(" ")); err != nil {
					return
				}
			}
		}
	}()
	defer func() { close(stopDrip); drip.Wait() }()
	t.Logf("status with %d slow clients: %v", slow, statusWithin(t, sock, time.Second, "slow clients"))

	t.Run("malformed JSON", func(t *testing.T) {
		for _, tc := range []struct{ body, want string }{
			{`{"before":`, "purge request body"},
			{`{"id": 7}`, "id"},
			{`not json`, "invalid character"},
			{"{\"id\": \"a\nb\"}", "purge request body"},
		} {
			resp, err := hc.Post(purge, "application/json", strings.NewReader(tc.body))
			apiError(t, resp, err, http.StatusBadRequest, tc.want)
		}
	})

	t.Run("oversized body", func(t *testing.T) {
		// 256 MiB announced and streamed: kilnd must refuse it after its 64 KiB, not hold it.
		const size = 256 << 20
		body := io.MultiReader(strings.NewReader(`{"id": "`), io.LimitReader(filler{}, size))
		req, _ := http.NewRequest(http.MethodPost, purge, body)
		req.ContentLength = size + 8
		start := time.Now()
		resp, err := hc.Do(req)
		apiError(t, resp, err, http.StatusRequestEntityTooLarge, "over 65536 bytes")
		pin := "http://kiln" + strings.Replace(api.PathPin, "{name}", "pumps", 1)
		resp, err = hc.Post(pin, "application/json", io.MultiReader(strings.NewReader(`{"model": "`), io.LimitReader(filler{}, 1<<20)))
		apiError(t, resp, err, http.StatusRequestEntityTooLarge, "over 65536 bytes")
		after := kilndFigures(t, hc)
		t.Logf("413 after %v; %s", time.Since(start), after)
		if after.rssMiB > base.rssMiB+64 {
			t.Errorf("RSS %.1f MiB after a refused %d MiB body (baseline %.1f): the body was held", after.rssMiB, size>>20, base.rssMiB)
		}
	})

	t.Run("2000 event streams", func(t *testing.T) {
		const n = 2000
		streams := make([]*bufio.Reader, n)
		conns := make([]net.Conn, n)
		start := time.Now()
		for i := range n {
			c, err := net.Dial("unix", sock)
			if err != nil {
				t.Fatalf("stream %d: %v", i, err)
			}
			conns[i] = c
			if _, err := io.WriteString(c, "GET /v1/events?follow=1 HTTP/1.1\r\nHost: kiln\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			streams[i] = bufio.NewReader(c)
		}
		defer func() {
			for _, c := range conns {
				if c != nil {
					c.Close()
				}
			}
		}()
		// Each stream answers 200 and replays the chain from the start: kilnd's start event.
		for i, br := range streams {
			_ = conns[i].SetReadDeadline(time.Now().Add(20 * time.Second))
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("stream %d: %v %v", i, resp, err)
			}
			streams[i] = bufio.NewReader(resp.Body) // chunked, undone
			if line, err := streams[i].ReadString('\n'); err != nil || !strings.Contains(line, `"seq"`) {
				t.Fatalf("stream %d: first event %q, %v", i, line, err)
			}
		}
		t.Logf("%d streams open and replaying in %v", n, time.Since(start))
		during := kilndFigures(t, hc)
		took := statusWithin(t, sock, time.Second, fmt.Sprintf("%d event streams", n))
		t.Logf("during: %s; status in %v", during, took)
		if during.rssMiB > base.rssMiB+256 {
			t.Errorf("RSS %.1f MiB with %d streams (baseline %.1f): over 128 KiB a stream", during.rssMiB, n, base.rssMiB)
		}
		// A new event (a pipeline added by a reload) reaches every stream.
		writeFile(t, filepath.Join(k.root, "etc/kiln/pipelines/pumps.yaml"), goodSpec)
		resp, err := hc.Post("http://kiln"+api.PathPipelinesReload, "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("reload: %d", resp.StatusCode)
		}
		start = time.Now()
		for i, br := range streams {
			_ = conns[i].SetReadDeadline(time.Now().Add(20 * time.Second))
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					t.Fatalf("stream %d: waiting for the reload event: %v", i, err)
				}
				if strings.Contains(line, `"pipelines.reload`) {
					break
				}
			}
		}
		t.Logf("the reload event reached all %d streams in %v", n, time.Since(start))
		for i, c := range conns {
			c.Close()
			conns[i] = nil
		}
		// Back to the baseline once they are gone: every stream's goroutine and fd ends.
		var after procFigures
		deadline := time.Now().Add(10 * time.Second)
		for {
			after = kilndFigures(t, hc)
			if after.goroutines <= base.goroutines+float64(slow)+20 && after.fds <= base.fds+float64(slow)+20 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("10 s after the streams closed: %s; baseline %s (+%d slow clients)", after, base, slow)
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("after: %s", after)
	})

	t.Run("slow clients timed out", func(t *testing.T) {
		// The API server's ReadHeaderTimeout (10 s) ends heads that never finish; the
		// slow body is a caller that keeps sending, and it was no obstacle to anyone above.
		for i, c := range slowConns[1:] {
			// A deadline already past would hide a close that came in time.
			deadline := slowSince.Add(20 * time.Second)
			if soon := time.Now().Add(time.Second); deadline.Before(soon) {
				deadline = soon
			}
			_ = c.SetReadDeadline(deadline)
			_, err := io.Copy(io.Discard, c)
			waited := time.Since(slowSince)
			if ne, ok := err.(net.Error); (ok && ne.Timeout()) || waited < 9*time.Second {
				t.Fatalf("slow head %d: closed after %v (%v); want kilnd to close it after its 10 s header timeout", i+1, waited, err)
			}
		}
		t.Logf("slow heads closed by kilnd %v after they began", time.Since(slowSince).Round(100*time.Millisecond))
		select {
		case err := <-k.done:
			k.done <- err
			t.Fatalf("kilnd exited under hostile callers: %v", err)
		default:
		}
		statusWithin(t, sock, time.Second, "after the hostile callers")
	})
}

// filler is an endless run of 'a'.
type filler struct{}

func (filler) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a'
	}
	return len(p), nil
}
