package serve

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// endReader is a request source that records whether the parser asked
// for a byte past its end, as the fast path's raw read would find nothing.
type endReader struct {
	r      *bytes.Reader
	hitEnd bool
}

func (e *endReader) Read(p []byte) (int, error) {
	if e.r.Len() == 0 {
		e.hitEnd = true
		return 0, errWouldBlock
	}
	return e.r.Read(p)
}

// FuzzRequestWhole holds requestWhole to the parser: when it says a buffer
// holds a whole request, readHead and readBody never ask for another byte
// (the fast path would fail the request if they did).
func FuzzRequestWhole(f *testing.F) {
	for _, s := range []string{
		"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Length: 4\r\n\r\n1,2\n",
		"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n1,2",
		"GET /ping HTTP/1.1\r\nHost: x\r\n\r\nGET /ping HTTP/1.1\r\n",
		"\r\n\n\r\nGET * HTTP/1.1\nHost: x\n\n",
		"GET / HTTP/1.1\nContent-Length: 5\r\n\r\n",
		"GET / HTTP/1.1\r\nContent-Length : 5\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 3\r\n\r\nabc",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\na",
		"POST / HTTP/1.0\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nab",
		"GET / HTTP/1.1\r\nHost: x\r\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\n Folded: y\r\nContent-Length: 9\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > lineBufBytes || !requestWhole(data) {
			return // the fast path sees at most br's buffer; "not whole" takes the blocking path
		}
		src := &endReader{r: bytes.NewReader(data)}
		c := &conn{
			e:  &Endpoint{opt: Options{Pipeline: "p", MaxRequestBytes: 1 << 20}},
			br: bufio.NewReaderSize(src, lineBufBytes),
			bw: bufio.NewWriter(io.Discard),
		}
		c.req = request{contentLength: -1}
		status, msg := c.readHead()
		if status == 0 {
			status, msg = c.readBody()
		}
		if src.hitEnd {
			t.Fatalf("requestWhole(%q) is true, but the parser read past the end (status %d %q)", data, status, msg)
		}
	})
}

// TestRawPathFallbacks: requests the fast path does not serve whole (a
// body sent after a pause, a body over br's buffer, a body larger than
// the backend socket takes at once) are served whole by the blocking path,
// and the connection goes on serving on the fast path after them.
func TestRawPathFallbacks(t *testing.T) {
	te := startEndpoint(t, Options{})
	te.Flip(startBackend(t, "iris/m1"))
	c, err := net.Dial("tcp", strings.TrimPrefix(te.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	exchange := func(name string, parts ...string) {
		t.Helper()
		for i, p := range parts {
			if i > 0 {
				time.Sleep(50 * time.Millisecond) // the endpoint has read what came so far
			}
			if _, err := io.WriteString(c, p); err != nil {
				t.Fatalf("%s: write: %v", name, err)
			}
		}
		body := strings.Join(parts, "")
		body = body[strings.Index(body, "\r\n\r\n")+4:]
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := io.ReadAll(res.Body)
		res.Body.Close()
		if want := strings.Repeat("iris/m1\n", strings.Count(body, "\n")); err != nil || res.StatusCode != 200 || string(got) != want {
			t.Fatalf("%s: %d %d bytes (%v), want 200 with %d bytes", name, res.StatusCode, len(got), err, len(want))
		}
	}
	head := func(n int) string {
		return "POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: " + strconv.Itoa(n) + "\r\n\r\n"
	}
	exchange("whole", head(4)+"1,2\n")
	exchange("body after a pause", head(4), "1,2\n")
	exchange("head in two writes", "POST /invocations HTTP/1.1\r\nHo", "st: x\r\nContent-Length: 4\r\n\r\n1,2\n")
	big := strings.Repeat("1,2,3\n", 4<<20/6) // over the backend socket's buffer: writev stops at EAGAIN
	exchange("4 MiB body", head(len(big))+big)
	exchange("whole again", head(4)+"1,2\n")
}

// TestReapClosesExpired: a client connection whose time ran out (here set
// in the past by hand: the real limits are minutes) is closed by the reaper
// within reapEvery, whether it waits for a request or for the rest of one.
func TestReapClosesExpired(t *testing.T) {
	te := startEndpoint(t, Options{})
	te.Flip(startBackend(t, "iris/m1"))
	addr := strings.TrimPrefix(te.url, "http://")
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	partial, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer partial.Close()
	if _, err := io.WriteString(partial, "POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n1,"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		te.mu.Lock()
		n := len(te.conns)
		te.mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections, want 2", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // the partial request is being read
	te.mu.Lock()
	for c := range te.conns {
		c.expire.Store(time.Now().Add(-time.Second).UnixNano())
	}
	te.mu.Unlock()
	start := time.Now()
	for _, c := range []net.Conn{idle, partial} {
		c.SetReadDeadline(time.Now().Add(3 * reapEvery))
		if n, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("read %d bytes, %v: want EOF (closed by the reaper)", n, err)
		}
	}
	if d := time.Since(start); d > 2*reapEvery+time.Second { // one sweep, with room for a loaded machine
		t.Errorf("closed after %v, want within reapEvery (%v)", d, reapEvery)
	}
}

// TestRawSinkFull: an answer larger than the client socket takes at once,
// to a whole request served on the fast path, is written through net.Conn
// once write(2) finds the socket full, and arrives whole.
func TestRawSinkFull(t *testing.T) {
	te := startEndpoint(t, Options{})
	b := startBackend(t, "iris/m1")
	big := bytes.Repeat([]byte("0123456789abcde\n"), 16<<20/16)
	b.handler = func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(big) }
	te.Flip(b)
	c, err := net.Dial("tcp", strings.TrimPrefix(te.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	for i := range 2 {
		if _, err := io.WriteString(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond) // let the endpoint fill the socket
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil || res.StatusCode != 200 || !bytes.Equal(got, big) {
			t.Fatalf("answer %d: %d, %d bytes (%v), want 200 and %d bytes", i, res.StatusCode, len(got), err, len(big))
		}
	}
}
