package serve

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
)

// FuzzReadRequest feeds the endpoint's hand-written HTTP/1.1 head and body parser whatever a
// client may send. Besides not panicking, what it accepts must be a request net/http reads the
// same way (method, target, framing, body): a proxy whose framing differs from the server
// behind it is how request smuggling starts. What it refuses it refuses with a 4xx/5xx and a
// one-line reason.
func FuzzReadRequest(f *testing.F) {
	for _, s := range []string{
		"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Length: 4\r\n\r\n1,2\n",
		"POST /invocations HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n1,2\r\n0\r\nX-T: 1\r\n\r\n",
		"POST / HTTP/1.0\r\nContent-Length: 2\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\n\r\nab",
		"\r\n\r\nGET * HTTP/1.1\nHost: x\n\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\na",
		"GET / HTTP/1.1\r\nHost: x\r\n Folded: y\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nX-Kiln-Request-Id: abc-1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: \x0b5\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\r\n\r\n",
		"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
		"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999999999\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
		"GET /" + strings.Repeat("a", 9000) + " HTTP/1.1\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	const limit = 64
	f.Fuzz(func(t *testing.T, data []byte) {
		c := &conn{
			e:  &Endpoint{opt: Options{Pipeline: "p", MaxRequestBytes: limit}},
			br: bufio.NewReaderSize(bytes.NewReader(data), lineBufBytes),
			bw: bufio.NewWriter(io.Discard),
		}
		c.req = request{contentLength: -1}
		status, msg := c.readHead()
		if status == 0 {
			status, msg = c.readBody()
		}
		switch {
		case status == -1:
			return // nothing but blank lines, or a head cut short: the client went away
		case status != 0:
			if status < 400 || status > 599 || msg == "" || strings.ContainsAny(msg, "\r\n") {
				t.Fatalf("refused with %d %q: want a 4xx/5xx and a one-line reason", status, msg)
			}
			return
		}
		req := &c.req
		for _, s := range append([]span{req.method, req.target, req.host, req.ctype}, req.fwd...) {
			if s.a < 0 || s.a > s.b || s.b > len(c.head) {
				t.Fatalf("span %v outside the head (%d bytes)", s, len(c.head))
			}
		}
		for _, s := range req.fwd {
			line := c.head[s.a:s.b]
			name, _, ok := bytes.Cut(line, []byte(":"))
			if !ok || bytes.ContainsAny(line, "\r\n\x00") {
				t.Fatalf("forwarded header line %q", line)
			}
			if k := requestHeaderKind(name); k != hkForward && k != hkContentType {
				t.Fatalf("forwarded a header the proxy owns: %q", line)
			}
		}
		if req.chunked && req.contentLength >= 0 {
			t.Fatalf("both chunked and Content-Length %d accepted", req.contentLength)
		}
		if int64(len(c.body)) > limit {
			t.Fatalf("body of %d bytes past the %d-byte limit", len(c.body), limit)
		}
		// net/http must read the same request from the same bytes (less the empty lines
		// before the request line, which RFC 9112 2.2 lets a server skip and net/http does not).
		hr, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(bytes.TrimLeft(data, "\r\n"))))
		if err != nil {
			if goStricter(err) {
				return
			}
			t.Fatalf("accepted %q, net/http refuses it: %v", data, err)
		}
		if got := string(c.head[req.method.a:req.method.b]); got != hr.Method {
			t.Fatalf("method %q, net/http %q", got, hr.Method)
		}
		if got := string(c.head[req.target.a:req.target.b]); got != hr.RequestURI {
			t.Fatalf("target %q, net/http %q", got, hr.RequestURI)
		}
		if req.chunked != (len(hr.TransferEncoding) > 0) {
			t.Fatalf("chunked %v, net/http %v", req.chunked, hr.TransferEncoding)
		}
		if !req.chunked && max(req.contentLength, 0) != hr.ContentLength {
			t.Fatalf("Content-Length %d, net/http %d", req.contentLength, hr.ContentLength)
		}
		body, err := io.ReadAll(hr.Body)
		if err == nil && !bytes.Equal(body, c.body) {
			t.Fatalf("body %q, net/http %q", c.body, body)
		}
	})
}

// goStricter lists net/http's refusals that the endpoint may lawfully accept: it leaves the
// Host value and the forwarded headers' values to the model server, as a proxy may, and serves
// origin-form "*". Framing (method, target, Content-Length, Transfer-Encoding) is not on it.
func goStricter(err error) bool {
	s := err.Error()
	for _, ok := range []string{"invalid Host header", "malformed MIME header", "invalid header field value"} {
		if strings.Contains(s, ok) {
			return true
		}
	}
	return false
}
