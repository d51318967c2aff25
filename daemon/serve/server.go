package serve

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The client side of the endpoint (see the package doc, "The proxy"): one
// goroutine per connection, per-connection scratch, raw header lines.

const (
	maxHeadBytes  = 64 << 10 // the whole request head
	lineBufBytes  = 8 << 10  // one head line (as nginx's large_client_header_buffers)
	idleTimeout   = 5 * time.Minute
	headerTimeout = 30 * time.Second
)

const (
	connIdle int32 = iota
	connActive
	connClosed
)

type span struct{ a, b int }

// request is the parsed head of one request; spans index conn.head.
type request struct {
	method, target, host span
	ctype                span   // the Content-Type value, for the prediction log
	fwd                  []span // header lines to forward, whole, without CRLF
	connTokens           []span // the Connection header's tokens other than close/keep-alive
	http10               bool
	keepAlive            bool
	contentLength        int64 // -1: not given
	chunked              bool
	expectContinue       bool
	id                   []byte // X-Kiln-Request-Id, the client's or generated
}

// conn is one client connection and its reusable scratch.
type conn struct {
	e     *Endpoint
	c     net.Conn
	br    *bufio.Reader
	bw    *bufio.Writer
	state atomic.Int32
	// expire is when the connection's wait for a request, or its request,
	// runs out (unix nanoseconds); Endpoint.reap enforces it.
	expire atomic.Int64

	// The fast path's state (rawio.go): br reads through src; step is the
	// RawConn.Read callback, made once per connection.
	src          rawSrc
	sink         rawSink // bw's destination
	step         func(fd uintptr) bool
	slow, closed bool // how the last step ended: a request for the blocking path, or the end

	req   request
	head  []byte // the request head, copied out of br
	body  []byte
	out   []byte // the captured start of the response body
	rhead []byte // the response head being built
	idBuf [48]byte
}

// Serve answers requests on l until Shutdown, when it returns ErrClosed. It
// may be called for several listeners at once (the unix socket and the TCP
// address). Shutdown closes l but never removes a socket file.
func (e *Endpoint) Serve(l net.Listener) error {
	e.mu.Lock()
	if e.closing.Load() {
		e.mu.Unlock()
		return ErrClosed
	}
	e.listeners[l] = struct{}{}
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.listeners, l)
		e.mu.Unlock()
	}()
	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if e.closing.Load() {
				return ErrClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("serve %s: %w", e.opt.Pipeline, err)
			}
			// EMFILE and friends: back off as net/http does, and go on.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			e.warn("accept failed", "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		c := &conn{e: e, c: nc, src: rawSrc{c: nc, fd: -1}, sink: rawSink{c: nc, fd: -1}}
		c.br = bufio.NewReaderSize(&c.src, lineBufBytes)
		c.bw = bufio.NewWriterSize(&c.sink, 4<<10)
		c.step = c.serveRaw
		c.expire.Store(time.Now().Add(idleTimeout).UnixNano())
		e.mu.Lock()
		if e.closing.Load() {
			e.mu.Unlock()
			_ = nc.Close() // shutting down: no new connections
			return ErrClosed
		}
		e.conns[c] = struct{}{}
		if !e.reaping {
			e.reaping = true
			go e.reap()
		}
		e.connWG.Add(1)
		e.mu.Unlock()
		go c.serve()
	}
}

func (c *conn) serve() {
	e := c.e
	defer func() {
		_ = c.c.Close() // the connection is done either way
		e.mu.Lock()
		delete(e.conns, c)
		e.mu.Unlock()
		e.connWG.Done()
	}()
	rc := rawConn(c.c)
	for {
		if rc != nil {
			// Whole requests are served inside RawConn.Read (rawio.go).
			c.slow, c.closed = false, false
			if !c.idleDeadline() {
				return
			}
			if err := rc.Read(c.step); err != nil || c.closed {
				return
			}
			// c.slow: a request that did not fit the fast path, served below.
		} else if c.br.Buffered() == 0 {
			if !c.idleDeadline() {
				return
			}
			if _, err := c.br.Peek(1); err != nil {
				return
			}
		}
		if !c.serveNext() {
			return
		}
	}
}

// idleDeadline bounds the wait for the next request; false when the
// connection is done.
func (c *conn) idleDeadline() bool {
	if c.e.closing.Load() { // Shutdown began: only a request already on its way
		return c.c.SetReadDeadline(time.Now().Add(idleCloseGrace)) == nil
	}
	c.expire.Store(time.Now().Add(idleTimeout).UnixNano())
	return true
}

// serveNext serves the request that has begun to arrive; false closes the
// connection.
func (c *conn) serveNext() bool {
	e := c.e
	if !c.state.CompareAndSwap(connIdle, connActive) {
		return false // Shutdown closed it while idle
	}
	if !c.serveOne() || e.closing.Load() {
		return false
	}
	c.state.Store(connIdle)
	return !(e.closing.Load() && c.state.CompareAndSwap(connIdle, connClosed))
}

// serveOne reads, proxies and answers one request; false closes the
// connection.
func (c *conn) serveOne() bool {
	e := c.e
	start := time.Now()
	c.expire.Store(start.Add(headerTimeout + e.opt.Timeout).UnixNano())
	c.req = request{fwd: c.req.fwd[:0], connTokens: c.req.connTokens[:0], contentLength: -1}
	c.head, c.body, c.out = c.head[:0], c.body[:0], c.out[:0]
	status, msg := c.readHead()
	req := &c.req
	if status == -1 {
		return false // the client closed or timed out between requests
	}
	if req.id == nil {
		req.id = e.newID(c.idBuf[:0])
	}
	if status != 0 {
		e.badRequests.Add(1)
		return c.writeError(status, "", msg, true)
	}
	rt := e.acquire()
	if rt == nil {
		e.noModel.Add(1)
		if !c.discardBody() {
			return false
		}
		return c.writeError(http.StatusServiceUnavailable, "", "pipeline "+e.opt.Pipeline+" has no live model yet", false)
	}
	defer rt.release()
	if status, msg := c.readBody(); status != 0 {
		e.badRequests.Add(1)
		return c.writeError(status, rt.model, msg, true)
	}
	x := exchange{c: c, model: rt.model, start: start, deadline: start.Add(rt.timeout)}
	if e.plog != nil {
		x.outCap = e.opt.OutputCap
	}
	err := rt.do(&x)
	if x.retried {
		e.retries.Add(1)
	}
	if err != nil {
		if errors.Is(err, errClientWrite) {
			return false // the client went away; the backend did its part
		}
		if x.wroteHead {
			// The client has a status and part of a body: cutting the
			// connection is the only way to say the answer is incomplete.
			e.aborted.Add(1)
			e.warn("backend failed mid-response", "model", rt.model, "request_id", string(req.id), "err", err)
			return false
		}
		e.backendErrs.Add(1)
		status := http.StatusBadGateway
		if isTimeout(err) {
			status = http.StatusGatewayTimeout
		}
		e.warn("backend failed", "model", rt.model, "request_id", string(req.id), "err", err)
		msg := fmt.Sprintf("model %s: %v", rt.model, err)
		// A failed request is logged too (status 502/504, the error as its
		// output): the monitor's probation reads the model's failure rate
		// from the log.
		x.status, c.out, x.outTruncated = status, append(c.out[:0], msg...), false
		c.logAnswer(&x)
		return c.writeError(status, rt.model, msg, false)
	}
	e.requests.Add(1)
	if cap(c.out) > 64<<10 {
		c.out = nil // a rare large answer: do not keep its buffer per connection
	}
	return x.keepClient
}

// logAnswer appends the exchange's record to the prediction log, when on.
func (c *conn) logAnswer(x *exchange) {
	if e := c.e; e.plog != nil {
		req := &c.req
		e.plog.append(req.id, x.model, x.start, time.Since(x.start), c.head[req.ctype.a:req.ctype.b], c.body, x.status, c.out, x.outTruncated)
	}
}

// readHead reads and checks a request head. status is 0 when it is fine,
// -1 when the client went away before a request, else the HTTP status to
// refuse it with (msg says why).
func (c *conn) readHead() (status int, msg string) {
	req := &c.req
	var line []byte
	var err error
	for { // RFC 9112 2.2: ignore empty lines before the request line
		line, err = c.br.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return http.StatusRequestURITooLong, "request line over 8 KiB"
			}
			return -1, ""
		}
		if len(trimEOL(line)) > 0 {
			break
		}
	}
	line = trimEOL(line)
	c.head = append(c.head, line...)
	sp1 := bytes.IndexByte(line, ' ')
	sp2 := bytes.LastIndexByte(line, ' ')
	if sp1 <= 0 || sp2 <= sp1+1 {
		return http.StatusBadRequest, "malformed request line"
	}
	req.method, req.target = span{0, sp1}, span{sp1 + 1, sp2}
	for _, b := range line[:sp1] {
		if !isTokenChar(b) {
			return http.StatusBadRequest, "malformed method"
		}
	}
	target := line[sp1+1 : sp2]
	if target[0] != '/' && string(target) != "*" {
		return http.StatusBadRequest, "request target must be a path (origin-form)"
	}
	for _, b := range target {
		if b <= ' ' || b == 0x7f {
			return http.StatusBadRequest, "malformed request target"
		}
	}
	switch string(line[sp2+1:]) {
	case "HTTP/1.1":
		req.keepAlive = true
	case "HTTP/1.0":
		req.http10 = true
	default:
		return http.StatusHTTPVersionNotSupported, "only HTTP/1.0 and HTTP/1.1 are served"
	}
	hostSeen, clSeen := false, false
	for {
		line, err = c.br.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return http.StatusRequestHeaderFieldsTooLarge, "header line over 8 KiB"
			}
			return -1, ""
		}
		line = trimEOL(line)
		if len(line) == 0 {
			break
		}
		if len(c.head)+len(line) > maxHeadBytes {
			return http.StatusRequestHeaderFieldsTooLarge, "request head over 64 KiB"
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return http.StatusBadRequest, "malformed header line"
		}
		// OWS is SP and HTAB alone (RFC 9110 5.6.3): bytes.TrimSpace would also drop a bare
		// CR, VT or FF at either end of the value, let it past the control-character check
		// below, and forward it inside the whole line to a backend that may read a bare CR
		// as a line end (request smuggling). Found by FuzzReadRequest.
		name, value := line[:colon], bytes.Trim(line[colon+1:], " \t")
		for _, b := range name {
			if !isTokenChar(b) { // also refuses obs-fold and "Name :"
				return http.StatusBadRequest, "malformed header name"
			}
		}
		for _, b := range value {
			if (b < ' ' && b != '\t') || b == 0x7f {
				return http.StatusBadRequest, "control character in header value"
			}
		}
		a := len(c.head)
		c.head = append(c.head, line...)
		// Spans are offsets into c.head: value and tok are subslices of line.
		var vs span
		if len(value) > 0 {
			vs.a = a + cap(line) - cap(value)
			vs.b = vs.a + len(value)
		}
		switch requestHeaderKind(name) {
		case hkForward:
			req.fwd = append(req.fwd, span{a, a + len(line)})
		case hkContentType:
			req.fwd = append(req.fwd, span{a, a + len(line)})
			req.ctype = vs
		case hkHost:
			if hostSeen {
				return http.StatusBadRequest, "more than one Host header"
			}
			hostSeen, req.host = true, vs
		case hkContentLength:
			n, ok := parseLength(value)
			if !ok || (clSeen && n != req.contentLength) {
				return http.StatusBadRequest, "bad Content-Length"
			}
			clSeen, req.contentLength = true, n
		case hkTransferEncoding:
			if req.http10 {
				// RFC 9112 6.1: its framing is faulty; nginx refuses it too. net/http
				// would ignore the header and read the chunks as the next request.
				return http.StatusBadRequest, "Transfer-Encoding in an HTTP/1.0 request"
			}
			if !bytes.EqualFold(value, []byte("chunked")) || req.chunked {
				return http.StatusNotImplemented, "only Transfer-Encoding: chunked is supported"
			}
			req.chunked = true
		case hkConnection:
			for i := vs.a; i < vs.b; {
				j := bytes.IndexByte(c.head[i:vs.b], ',')
				if j < 0 {
					j = vs.b - i
				}
				t := span{i, i + j}
				for t.a < t.b && (c.head[t.a] == ' ' || c.head[t.a] == '\t') {
					t.a++
				}
				for t.b > t.a && (c.head[t.b-1] == ' ' || c.head[t.b-1] == '\t') {
					t.b--
				}
				switch tok := c.head[t.a:t.b]; {
				case bytes.EqualFold(tok, []byte("close")):
					req.keepAlive = false
				case bytes.EqualFold(tok, []byte("keep-alive")):
					req.keepAlive = true
				case len(tok) > 0:
					req.connTokens = append(req.connTokens, t)
				}
				i += j + 1
			}
		case hkExpect:
			if !bytes.EqualFold(value, []byte("100-continue")) {
				return http.StatusExpectationFailed, "only Expect: 100-continue is supported"
			}
			req.expectContinue = !req.http10
		case hkRequestID:
			if saneID(value) {
				req.id = append(c.idBuf[:0], value...)
			}
		case hkHop:
		}
	}
	if req.chunked && clSeen {
		return http.StatusBadRequest, "both Content-Length and Transfer-Encoding"
	}
	if !hostSeen && !req.http10 {
		return http.StatusBadRequest, "missing Host header"
	}
	if len(req.connTokens) > 0 { // headers the client named hop-by-hop stay here
		kept := req.fwd[:0]
		for _, s := range req.fwd {
			name, _, _ := bytes.Cut(c.head[s.a:s.b], []byte(":"))
			named := false
			for _, t := range req.connTokens {
				named = named || bytes.EqualFold(name, c.head[t.a:t.b])
			}
			if !named {
				kept = append(kept, s)
			}
		}
		req.fwd = kept
	}
	return 0, ""
}

// readBody reads the whole request body into c.body; a non-zero status
// refuses the request.
func (c *conn) readBody() (status int, msg string) {
	req := &c.req
	max := c.e.opt.MaxRequestBytes
	if !req.chunked && req.contentLength <= 0 {
		return 0, ""
	}
	if req.contentLength > max {
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is over %d bytes", max)
	}
	if req.expectContinue {
		_, _ = c.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n") // errors are sticky; Flush reports them
		if err := c.bw.Flush(); err != nil {
			return http.StatusBadRequest, "write 100 Continue: " + err.Error()
		}
	}
	if !req.chunked {
		n := int(req.contentLength)
		if cap(c.body) < n {
			c.body = make([]byte, n)
		}
		c.body = c.body[:n]
		if _, err := io.ReadFull(c.br, c.body); err != nil {
			return http.StatusBadRequest, "read request body: " + err.Error()
		}
		return 0, ""
	}
	cr := httputil.NewChunkedReader(c.br)
	for {
		if len(c.body) == cap(c.body) {
			c.body = append(c.body, 0)[:len(c.body)]
		}
		n, err := cr.Read(c.body[len(c.body):cap(c.body)])
		c.body = c.body[:len(c.body)+n]
		if int64(len(c.body)) > max {
			return http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is over %d bytes", max)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return http.StatusBadRequest, "read chunked request body: " + err.Error()
		}
	}
	if err := skipTrailer(c.br); err != nil {
		return http.StatusBadRequest, "read request trailer: " + err.Error()
	}
	return 0, ""
}

// discardBody reads a body that will not be forwarded, so the connection
// can serve the next request; false when it cannot be.
func (c *conn) discardBody() bool {
	req := &c.req
	switch {
	case req.chunked:
		if _, err := io.Copy(io.Discard, httputil.NewChunkedReader(c.br)); err != nil {
			return false
		}
		return skipTrailer(c.br) == nil
	case req.contentLength > 0:
		if req.expectContinue || req.contentLength > 1<<20 {
			req.keepAlive = false // do not wait for a body nobody needs
			return true
		}
		_, err := c.br.Discard(int(req.contentLength))
		return err == nil
	}
	return true
}

// skipTrailer reads and drops a chunked body's trailer section.
func skipTrailer(br *bufio.Reader) error {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(trimEOL(line)) == 0 {
			return nil
		}
	}
}

var errClientWrite = errors.New("write to client")

// writeError answers with a JSON error made by kiln itself; closeConn (or a
// client that did not ask for keep-alive) closes the connection after it.
func (c *conn) writeError(status int, model, msg string, closeConn bool) bool {
	e, req := c.e, &c.req
	keep := !closeConn && req.keepAlive && !e.closing.Load()
	body, _ := json.Marshal(errorBody{Error: msg, Pipeline: e.opt.Pipeline, Model: model, RequestID: string(req.id)}) // strings only: cannot fail
	body = append(body, '\n')
	bw := c.bw
	_, _ = bw.WriteString("HTTP/1.1 ") // errors are sticky; Flush reports them
	_, _ = bw.WriteString(strconv.Itoa(status))
	_ = bw.WriteByte(' ')
	_, _ = bw.WriteString(http.StatusText(status))
	_, _ = bw.WriteString("\r\nContent-Type: application/json\r\nContent-Length: ")
	_, _ = bw.WriteString(strconv.Itoa(len(body)))
	_, _ = bw.WriteString("\r\n" + hdrRequestID + ": ")
	_, _ = bw.Write(req.id)
	if model != "" {
		_, _ = bw.WriteString("\r\n" + hdrModel + ": ")
		_, _ = bw.WriteString(model)
	}
	_, _ = bw.WriteString(connectionHeader(req, keep))
	_, _ = bw.WriteString("\r\n\r\n")
	if c.req.method != (span{}) && string(c.head[req.method.a:req.method.b]) != http.MethodHead {
		_, _ = bw.Write(body)
	}
	return bw.Flush() == nil && keep
}

// connectionHeader is the Connection header line (with its leading CRLF)
// that tells the client what happens to the connection, or "".
func connectionHeader(req *request, keep bool) string {
	switch {
	case !keep:
		return "\r\nConnection: close"
	case req.http10:
		return "\r\nConnection: keep-alive"
	}
	return ""
}

type headerKind uint8

const (
	hkForward headerKind = iota
	hkHost
	hkContentLength
	hkTransferEncoding
	hkConnection
	hkExpect
	hkRequestID
	hkModel
	hkContentType
	hkHop
)

// requestHeaderKind classifies a request header name, case-insensitively.
func requestHeaderKind(name []byte) headerKind {
	switch len(name) {
	case 2:
		if bytes.EqualFold(name, []byte("TE")) {
			return hkHop
		}
	case 4:
		if bytes.EqualFold(name, []byte("Host")) {
			return hkHost
		}
	case 6:
		if bytes.EqualFold(name, []byte("Expect")) {
			return hkExpect
		}
	case 7:
		if bytes.EqualFold(name, []byte("Upgrade")) || bytes.EqualFold(name, []byte("Trailer")) {
			return hkHop
		}
	case 10:
		if bytes.EqualFold(name, []byte("Connection")) {
			return hkConnection
		}
		if bytes.EqualFold(name, []byte("Keep-Alive")) {
			return hkHop
		}
	case 12:
		if bytes.EqualFold(name, []byte(hdrModel)) {
			return hkModel
		}
		if bytes.EqualFold(name, []byte("Content-Type")) {
			return hkContentType
		}
	case 14:
		if bytes.EqualFold(name, []byte("Content-Length")) {
			return hkContentLength
		}
	case 16:
		if bytes.EqualFold(name, []byte("Proxy-Connection")) {
			return hkHop
		}
	case 17:
		if bytes.EqualFold(name, []byte("Transfer-Encoding")) {
			return hkTransferEncoding
		}
		if bytes.EqualFold(name, []byte(hdrRequestID)) {
			return hkRequestID
		}
	case 18:
		if bytes.EqualFold(name, []byte("Proxy-Authenticate")) {
			return hkHop
		}
	case 19:
		if bytes.EqualFold(name, []byte("Proxy-Authorization")) {
			return hkHop
		}
	}
	return hkForward
}

func parseLength(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// tokenChars are RFC 9110's tchar.
var tokenChars = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func isTokenChar(b byte) bool { return tokenChars[b] }

// copyBufPool holds the buffers for bodies not copied through bufio directly.
var copyBufPool = sync.Pool{New: func() any { return new([16 << 10]byte) }}
