package serve

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// route is one Backend behind the endpoint with its own keep-alive pool.
// It is live from the Flip that made it until the next one, then retired:
// its idle connections are closed at once and each busy one when its
// request ends; drained is closed when the last request has finished.
type route struct {
	b        Backend
	model    string
	modelHdr []string
	maxIdle  int
	timeout  time.Duration
	slack    time.Duration // how late past timeout a backend exchange may be cut

	inflight  atomic.Int64
	retired   atomic.Bool
	drained   chan struct{}
	drainOnce sync.Once

	mu     sync.Mutex
	idle   []*bconn
	closed bool
}

func newRoute(b Backend, maxIdle int, timeout time.Duration) *route {
	m := b.Model()
	return &route{b: b, model: m, modelHdr: []string{m}[:1:1], maxIdle: maxIdle, timeout: timeout,
		slack: min(timeout/16, time.Second), drained: make(chan struct{})}
}

func (r *route) release() {
	if r.inflight.Add(-1) == 0 && r.retired.Load() {
		r.drainOnce.Do(func() { close(r.drained) })
	}
}

func (r *route) retire() {
	r.retired.Store(true)
	r.mu.Lock()
	idle := r.idle
	r.idle, r.closed = nil, true
	r.mu.Unlock()
	// Closing a pool of connections takes a syscall each: not on Flip's path.
	go func() {
		for _, c := range idle {
			_ = c.c.Close() // a pooled connection has nothing left to say
		}
	}()
	if r.inflight.Load() == 0 {
		r.drainOnce.Do(func() { close(r.drained) })
	}
}

func (r *route) isDrained() bool {
	select {
	case <-r.drained:
		return true
	default:
		return false
	}
}

// closeIdle closes the pooled connections and makes the pool close every
// connection handed back from now on.
func (r *route) closeIdle() {
	r.mu.Lock()
	idle := r.idle
	r.idle, r.closed = nil, true
	r.mu.Unlock()
	for _, c := range idle {
		_ = c.c.Close() // a pooled connection has nothing left to say
	}
}

// bconn is one keep-alive connection to a backend.
type bconn struct {
	c        net.Conn
	rc       syscall.RawConn // nil when c has none
	src      rawSrc          // br's source
	br       *bufio.Reader
	head     []byte    // the request head being sent
	deadline time.Time // c's read and write deadline

	// send's state, kept here so that its callback is made once per
	// connection rather than once per request
	onRead     func(fd uintptr) bool
	iov        [2][]byte
	unsent     [][]byte
	wrote      bool
	werr, rerr error
}

func newBconn(nc net.Conn) *bconn {
	c := &bconn{c: nc, rc: rawConn(nc), src: rawSrc{c: nc, fd: -1}}
	c.br = bufio.NewReaderSize(&c.src, 8<<10)
	c.onRead = c.writeThenWait
	return c
}

// send writes the request (c.head, then body) and, when it can, waits for
// the first bytes of the answer without a wasted read: the wait begins
// before the write, inside RawConn.Read (see rawio.go). A socket too full
// to take the request at once, or a connection without a RawConn, goes
// through net.Conn. A failed write reports werr, a failed wait rerr.
func (c *bconn) send(body []byte) (werr, rerr error) {
	c.iov = [2][]byte{c.head, body}
	c.unsent = c.iov[:]
	if c.rc == nil || c.br.Buffered() > 0 {
		_, werr = (*net.Buffers)(&c.unsent).WriteTo(c.c)
		c.iov, c.unsent = [2][]byte{}, nil
		return werr, nil
	}
	c.wrote, c.werr, c.rerr = false, nil, nil
	err := c.rc.Read(c.onRead)
	werr, rerr = c.werr, c.rerr
	c.werr, c.rerr = nil, nil
	switch {
	case werr == syscall.EAGAIN: // the socket is full: net.Conn waits for room
		_, werr = (*net.Buffers)(&c.unsent).WriteTo(c.c)
		rerr = nil
	case werr != nil:
		werr = os.NewSyscallError("writev", werr)
	case err != nil:
		rerr = err
	}
	c.iov, c.unsent = [2][]byte{}, nil // the body is the client's buffer: do not hold on to it
	return werr, rerr
}

// writeThenWait is send's RawConn.Read callback: called first, it writes
// the request and asks to wait; called again once the socket is readable,
// it reads the start of the answer into br.
func (c *bconn) writeThenWait(fd uintptr) bool {
	if !c.wrote {
		c.wrote = true
		c.unsent, c.werr = writeAll(int(fd), c.unsent)
		return c.werr != nil
	}
	c.src.fd = int(fd)
	_, err := c.br.Peek(1)
	c.src.fd = -1
	if errors.Is(err, errWouldBlock) {
		return false // woken with nothing to read
	}
	c.rerr = err
	return true
}

// get pops the most recently used idle connection (reused=true), or dials.
func (r *route) get(ctx context.Context, fresh bool) (c *bconn, reused bool, err error) {
	if !fresh {
		r.mu.Lock()
		if n := len(r.idle); n > 0 {
			c = r.idle[n-1]
			r.idle[n-1] = nil
			r.idle = r.idle[:n-1]
			r.mu.Unlock()
			return c, true, nil
		}
		r.mu.Unlock()
	}
	nc, err := r.b.DialContext(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("dial: %w", err)
	}
	return newBconn(nc), false, nil
}

// put hands a connection whose exchange ended cleanly back to the pool.
func (r *route) put(c *bconn) {
	r.mu.Lock()
	if r.closed || len(r.idle) >= r.maxIdle {
		r.mu.Unlock()
		_ = c.c.Close() // retired route or full pool: nobody will reuse it
		return
	}
	r.idle = append(r.idle, c)
	r.mu.Unlock()
}

// exchange is one request's state through do.
type exchange struct {
	c        *conn
	model    string
	outCap   int
	start    time.Time
	deadline time.Time

	gotBytes     bool // any byte of a response arrived
	wroteHead    bool // the client has been sent (or buffered) a status
	retried      bool
	keepClient   bool // the client connection may serve another request
	status       int
	outTruncated bool
}

// do sends the client's request to the backend and copies the answer to the
// client. A pooled connection that fails before any response byte is
// replaced by a fresh one, once.
func (r *route) do(x *exchange) error {
	fresh := false
	ctx := x.c.e.dialCtx // deadlines bound the exchange; a forced Shutdown cancels dials
	for {
		c, reused, err := r.get(ctx, fresh)
		if err != nil {
			return err
		}
		keep, err := r.roundTrip(c, x)
		if err == nil {
			if keep {
				r.put(c)
			} else {
				_ = c.c.Close() // the backend asked to close, or the body ended at EOF
			}
			return nil
		}
		_ = c.c.Close() // broken mid-exchange: never reuse
		if reused && !x.gotBytes && !x.wroteHead {
			fresh, x.retried = true, true
			continue
		}
		return err
	}
}

// roundTrip writes the request on c, reads the response head, and streams
// the answer to the client. keep says whether c may be reused.
func (r *route) roundTrip(c *bconn, x *exchange) (keep bool, err error) {
	cl := x.c
	req := &cl.req
	// The deadline moves only when this request's would fall outside
	// [x.deadline, x.deadline+slack]: once per slack per connection under
	// load rather than two timer updates per request.
	if c.deadline.Before(x.deadline) || c.deadline.After(x.deadline.Add(r.slack)) {
		c.deadline = x.deadline.Add(r.slack)
		if err := c.c.SetDeadline(c.deadline); err != nil {
			return false, fmt.Errorf("set deadline: %w", err)
		}
	}
	c.head = appendRequestHead(c.head[:0], cl)
	if werr, rerr := c.send(cl.body); werr != nil {
		return false, fmt.Errorf("send request: %w", werr)
	} else if rerr != nil {
		return false, fmt.Errorf("read response: %w", rerr)
	}
	var hd respHead
	for {
		hd, err = readResponseHead(c.br, x)
		if err != nil {
			return false, fmt.Errorf("read response: %w", err)
		}
		if hd.status >= 200 || hd.status == http.StatusSwitchingProtocols {
			break
		}
		// 1xx interim answers (100 Continue, 103 Early Hints) are dropped.
	}
	if hd.status == http.StatusSwitchingProtocols {
		return false, errors.New("backend switched protocols: upgrades are not proxied")
	}
	x.status = hd.status
	method := cl.head[req.method.a:req.method.b]
	noBody := string(method) == http.MethodHead || hd.status == http.StatusNoContent || hd.status == http.StatusNotModified
	// Framing to the client: the backend's length when it gave one, else
	// chunks for HTTP/1.1, else the end of the connection (HTTP/1.0).
	x.keepClient = req.keepAlive && !cl.e.closing.Load()
	bw := cl.bw
	rechunk := false
	switch {
	case noBody:
		if hd.contentLength >= 0 && !hd.chunked && string(method) == http.MethodHead {
			cl.rhead = appendContentLength(cl.rhead, hd.contentLength)
		}
	case !hd.chunked && hd.contentLength >= 0:
		cl.rhead = appendContentLength(cl.rhead, hd.contentLength)
	case req.http10:
		x.keepClient = false
	default:
		rechunk = true
		cl.rhead = append(cl.rhead, "\r\nTransfer-Encoding: chunked"...)
	}
	cl.rhead = append(cl.rhead, connectionHeader(req, x.keepClient)...)
	cl.rhead = append(cl.rhead, "\r\n\r\n"...)
	x.wroteHead = true
	if _, err := bw.Write(cl.rhead); err != nil {
		return false, errClientWrite
	}
	switch {
	case noBody:
		err = nil
	case hd.chunked:
		err = x.copyStream(httputil.NewChunkedReader(c.br), c.br, rechunk)
		if err == nil {
			if err = skipTrailer(c.br); err != nil {
				err = fmt.Errorf("read response trailer: %w", err)
			}
		}
	case hd.contentLength >= 0:
		err = x.copyN(c.br, hd.contentLength)
	default: // no length: the body ends when the backend closes
		err = x.copyStream(c.br, c.br, rechunk)
		hd.close = true
	}
	if err != nil {
		return false, err
	}
	if rechunk {
		_, _ = bw.WriteString("0\r\n\r\n") // errors are sticky; Flush reports them
	}
	// Logged before the client has the end of the answer: a client that
	// got its answer can count on FlushLog making the record visible.
	cl.logAnswer(x)
	if err := bw.Flush(); err != nil {
		return !hd.close, errClientWrite
	}
	return !hd.close, nil
}

func appendContentLength(b []byte, n int64) []byte {
	b = append(b, "\r\nContent-Length: "...)
	return strconv.AppendInt(b, n, 10)
}

// capture keeps the start of the response body for the prediction log.
func (x *exchange) capture(p []byte) {
	if x.outCap == 0 {
		return
	}
	cl := x.c
	if room := x.outCap - len(cl.out); room > 0 {
		cl.out = append(cl.out, p[:min(len(p), room)]...)
		if len(p) > room {
			x.outTruncated = true
		}
	} else if len(p) > 0 {
		x.outTruncated = true
	}
}

// copyN copies an n-byte body from the backend to the client through the
// two bufio buffers, with no buffer of its own.
func (x *exchange) copyN(br *bufio.Reader, n int64) error {
	bw := x.c.bw
	for n > 0 {
		if br.Buffered() == 0 {
			if _, err := br.Peek(1); err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return fmt.Errorf("read response body: %w", err)
			}
		}
		p, _ := br.Peek(int(min(n, int64(br.Buffered()))))
		x.gotBytes = true
		x.capture(p)
		if _, err := bw.Write(p); err != nil {
			return errClientWrite
		}
		_, _ = br.Discard(len(p)) // peeked: cannot fail
		n -= int64(len(p))
	}
	return nil
}

// copyStream copies a body of unknown length until src ends, re-chunked for
// the client when rechunk is set, and flushes whenever the backend has
// nothing more buffered (via), so a streamed answer streams.
func (x *exchange) copyStream(src io.Reader, via *bufio.Reader, rechunk bool) error {
	bw := x.c.bw
	buf := copyBufPool.Get().(*[16 << 10]byte)
	defer copyBufPool.Put(buf)
	for {
		m, rerr := src.Read(buf[:])
		if m > 0 {
			x.gotBytes = true
			x.capture(buf[:m])
			if rechunk {
				var h [20]byte
				_, _ = bw.Write(append(strconv.AppendInt(h[:0], int64(m), 16), '\r', '\n')) // sticky errors
				_, _ = bw.Write(buf[:m])
				_, _ = bw.WriteString("\r\n")
			} else {
				_, _ = bw.Write(buf[:m])
			}
			if via.Buffered() == 0 {
				if err := bw.Flush(); err != nil {
					return errClientWrite
				}
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return fmt.Errorf("read response body: %w", rerr)
		}
	}
}

// appendRequestHead appends the request line, Host, the client's forwarded
// header lines as they came, the request id and kiln's own Content-Length.
func appendRequestHead(b []byte, cl *conn) []byte {
	req, h := &cl.req, cl.head
	b = append(b, h[req.method.a:req.method.b]...)
	b = append(b, ' ')
	b = append(b, h[req.target.a:req.target.b]...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	if req.host.b > req.host.a {
		b = append(b, h[req.host.a:req.host.b]...)
	} else {
		b = append(b, "localhost"...)
	}
	for _, s := range req.fwd {
		b = append(b, "\r\n"...)
		b = append(b, h[s.a:s.b]...)
	}
	b = append(b, "\r\n"+hdrRequestID+": "...)
	b = append(b, req.id...)
	m := string(h[req.method.a:req.method.b])
	if n := len(cl.body); n > 0 || m == http.MethodPost || m == http.MethodPut || m == http.MethodPatch {
		b = append(b, "\r\nContent-Length: "...)
		b = strconv.AppendInt(b, int64(n), 10)
	}
	return append(b, "\r\n\r\n"...)
}

type respHead struct {
	status        int
	contentLength int64 // -1: not given
	chunked       bool
	close         bool
}

var errHeadTooLong = errors.New("response head line longer than 8 KiB")

// readResponseHead parses a status line and header block from br. For a
// final (non-1xx) answer it builds the client's response head in x.c.rhead:
// status line, the backend's headers less hop-by-hop ones and framing, and
// kiln's two headers; the caller adds framing and the blank line.
func readResponseHead(br *bufio.Reader, x *exchange) (respHead, error) {
	hd := respHead{contentLength: -1}
	line, err := br.ReadSlice('\n')
	if len(line) > 0 {
		x.gotBytes = true
	}
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return hd, errHeadTooLong
		}
		return hd, err
	}
	line = trimEOL(line)
	// "HTTP/1.1 200 OK"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return hd, fmt.Errorf("malformed status line %q", line)
	}
	http10 := line[7] == '0'
	code, ok := parseLength(line[9:12])
	if !ok || code < 100 || (len(line) > 12 && line[12] != ' ') {
		return hd, fmt.Errorf("malformed status line %q", line)
	}
	hd.status = int(code)
	final := code >= 200
	cl := x.c
	if final {
		cl.rhead = append(cl.rhead[:0], "HTTP/1.1 "...)
		cl.rhead = append(cl.rhead, line[9:]...)
		if len(line) == 12 { // no reason phrase: RFC 9112 still wants the space
			cl.rhead = append(cl.rhead, ' ')
		}
	}
	keepAlive := false
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return hd, errHeadTooLong
			}
			return hd, err
		}
		line = trimEOL(line)
		if len(line) == 0 {
			break
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(k) == 0 {
			return hd, fmt.Errorf("malformed header line %q", line)
		}
		v = bytes.TrimSpace(v)
		for _, b := range line {
			if (b < ' ' && b != '\t') || b == 0x7f {
				return hd, fmt.Errorf("control character in header line %q", line)
			}
		}
		switch requestHeaderKind(k) {
		case hkContentLength:
			n, ok := parseLength(v)
			if !ok || (hd.contentLength >= 0 && n != hd.contentLength) {
				return hd, fmt.Errorf("bad Content-Length %q", v)
			}
			hd.contentLength = n
		case hkTransferEncoding:
			if !bytes.EqualFold(v, []byte("chunked")) {
				return hd, fmt.Errorf("unsupported Transfer-Encoding %q", v)
			}
			hd.chunked = true
		case hkConnection:
			for tok := range bytes.SplitSeq(v, []byte(",")) {
				tok = bytes.TrimSpace(tok)
				if bytes.EqualFold(tok, []byte("close")) {
					hd.close = true
				} else if bytes.EqualFold(tok, []byte("keep-alive")) {
					keepAlive = true
				}
			}
		case hkHop, hkRequestID, hkModel:
		default: // Host and Expect are not response headers; pass them on like any other
			if final {
				cl.rhead = append(cl.rhead, "\r\n"...)
				cl.rhead = append(cl.rhead, line...)
			}
		}
	}
	if http10 && !keepAlive {
		hd.close = true
	}
	if final {
		cl.rhead = append(cl.rhead, "\r\n"+hdrRequestID+": "...)
		cl.rhead = append(cl.rhead, cl.req.id...)
		cl.rhead = append(cl.rhead, "\r\n"+hdrModel+": "...)
		cl.rhead = append(cl.rhead, x.model...)
	}
	return hd, nil
}

func trimEOL(b []byte) []byte {
	b = b[:len(b)-1]
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	return b
}
