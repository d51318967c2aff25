package serve

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// rawExchange sends raw bytes to the endpoint and reads the responses.
func rawExchange(t *testing.T, te *testEndpoint, raw string, n int) []*http.Response {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(te.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var out []*http.Response
	for range n {
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", len(out), err)
		}
		if res.StatusCode == http.StatusContinue {
			res, err = http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("response %d after 100: %v", len(out), err)
			}
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		res.Body = io.NopCloser(strings.NewReader(string(body)))
		res.Header.Set("X-Test-Body", string(body))
		out = append(out, res)
	}
	return out
}

func TestRawRequests(t *testing.T) {
	te := startEndpoint(t, Options{})
	te.Flip(startBackend(t, "iris/m1"))
	for _, tc := range []struct {
		name, raw string
		status    int
		body      string
		close     bool
	}{
		{"chunked body", "POST /invocations HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n1\n\r\n2\r\n2\n\r\n0\r\n\r\n", 200, "iris/m1\niris/m1\n", false},
		{"http/1.0", "POST /invocations HTTP/1.0\r\nContent-Length: 2\r\n\r\n1\n", 200, "iris/m1\n", true},
		{"expect 100", "POST /invocations HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n1\n", 200, "iris/m1\n", false},
		{"CL and TE", "POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "", true},
		{"two CLs", "POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n1\n", 400, "", true},
		{"obs-fold", "POST /invocations HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\n1\n", 400, "", true},
		{"gzip TE", "POST /invocations HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501, "", true},
		{"no host", "GET /ping HTTP/1.1\r\n\r\n", 400, "", true},
		{"absolute form", "GET http://evil/ping HTTP/1.1\r\nHost: x\r\n\r\n", 400, "", true},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, "", true},
		{"connection close", "POST /invocations HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\n1\n", 200, "iris/m1\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := rawExchange(t, te, tc.raw, 1)[0]
			if res.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (%s)", res.StatusCode, tc.status, res.Header.Get("X-Test-Body"))
			}
			if tc.body != "" && res.Header.Get("X-Test-Body") != tc.body {
				t.Errorf("body %q, want %q", res.Header.Get("X-Test-Body"), tc.body)
			}
			if res.Close != tc.close {
				t.Errorf("close %v, want %v", res.Close, tc.close)
			}
			if res.Header.Get(hdrRequestID) == "" {
				t.Errorf("no request id")
			}
		})
	}
	// Pipelined requests are answered in order on one connection.
	one := "POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n1\n2\n"
	for i, res := range rawExchange(t, te, one+one+one, 3) {
		if res.StatusCode != 200 || res.Header.Get("X-Test-Body") != "iris/m1\niris/m1\n" {
			t.Errorf("pipelined %d: %d %q", i, res.StatusCode, res.Header.Get("X-Test-Body"))
		}
	}
}
