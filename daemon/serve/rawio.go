package serve

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Waiting without a wasted read (see the package doc, "The proxy").
//
// net.Conn.Read always tries read(2) before it waits: a request/response
// exchange pays a read that fails with EAGAIN each time it waits for the
// peer, once for the backend's answer and once for the client's next
// request, a third of the endpoint's socket syscalls. Go's poller forgets a
// readiness edge when a read begins, so "wait first, then read" is only
// safe when the wait starts before the data can have arrived: the wait for
// the answer is begun before the request is written (the write is done
// inside syscall.RawConn.Read's callback), and a client connection waits
// for its next request inside the same RawConn.Read that read the previous
// one, after a read that left the socket empty. Everything else (a request
// that did not come whole, a large body, a slow client) takes net.Conn's
// own blocking reads.

// errWouldBlock is a raw read that found nothing to read.
var errWouldBlock = errors.New("would block")

// serveRaw is a client connection's RawConn.Read callback: it is called at
// once and then each time the socket has become readable, reads with
// read(2), serves each whole request it finds, and asks to wait (false)
// after a read that emptied the socket, with no read to find that out
// again. It returns true to leave: c.closed when the connection is done,
// c.slow for a request the blocking path must serve (one that did not come
// whole: a chunked body, a body larger than br's buffer or sent after a
// pause).
func (c *conn) serveRaw(fd uintptr) bool {
	c.src.fd, c.sink.fd = int(fd), int(fd)
	woke := true // the socket may have something: this call is the first, or after an edge
	for {
		if n := c.br.Buffered(); n == 0 || !requestWhole(peekAll(c.br)) {
			if n == c.br.Size() {
				c.slow = true
				break
			}
			if c.src.drained && !woke {
				if n > 0 {
					// Part of a request (or one the guess cannot frame):
					// the blocking path reads the rest, or refuses it.
					c.slow = true
					break
				}
				if !c.idleDeadline() {
					c.closed = true
					break
				}
				c.src.fd, c.sink.fd = -1, -1
				return false // wait for the next request
			}
			woke = false
			if _, err := c.br.Peek(n + 1); err != nil && !errors.Is(err, errWouldBlock) {
				c.closed = true // the client closed, or the read failed
				break
			}
			continue
		}
		// A whole request: the parser reads it from br alone (a read that
		// would block fails it, which requestWhole's fuzz test rules out).
		if !c.serveNext() {
			c.closed = true
			break
		}
	}
	c.src.fd, c.sink.fd = -1, -1
	return true
}

// peekAll is br's buffered bytes, unread.
func peekAll(br *bufio.Reader) []byte {
	b, _ := br.Peek(br.Buffered())
	return b
}

// rawSrc is the source of a connection's bufio.Reader: net.Conn's Read, or
// read(2) on fd while a RawConn.Read callback holds the connection's read
// side (fd >= 0).
type rawSrc struct {
	c  net.Conn
	fd int
	// drained: the last raw read returned less than it asked for, so the
	// socket was empty after it and a readiness edge will tell of more.
	drained bool
}

func (s *rawSrc) Read(p []byte) (int, error) {
	if s.fd < 0 {
		return s.c.Read(p)
	}
	for {
		n, err := rawRead(s.fd, p)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			s.drained = true
			return 0, errWouldBlock
		case err != nil:
			return 0, os.NewSyscallError("read", err)
		case n == 0 && len(p) > 0:
			return 0, io.EOF
		}
		s.drained = n < len(p)
		return n, nil
	}
}

// rawSink is the destination of a client connection's bufio.Writer:
// write(2) on fd while a RawConn.Read callback holds the connection (fd >=
// 0), net.Conn's Write otherwise, and for whatever a full socket did not
// take (net.Conn waits for room, within the connection's deadline).
type rawSink struct {
	c  net.Conn
	fd int
}

func (s *rawSink) Write(p []byte) (int, error) {
	if s.fd < 0 {
		return s.c.Write(p)
	}
	n := 0
	for n < len(p) {
		m, err := rawWritev(s.fd, [][]byte{p[n:]})
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			m, err = s.c.Write(p[n:])
			return n + m, err
		case err != nil:
			return n, os.NewSyscallError("write", err)
		}
		n += m
	}
	return n, nil
}

// rawRead and rawWritev are read(2) and writev(2) without the runtime's
// syscall bookkeeping (syscall.RawSyscall): on a non-blocking socket they
// return at once, so the P need not be marked as in a syscall, which under
// contention (the thread descheduled mid-call) also makes sysmon hand the P
// to another thread.
func rawRead(fd int, p []byte) (int, error) {
	var ptr unsafe.Pointer
	if len(p) > 0 {
		ptr = unsafe.Pointer(&p[0])
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(ptr), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func rawWritev(fd int, bufs [][]byte) (int, error) {
	var iov [4]unix.Iovec
	k := 0
	for _, b := range bufs {
		if len(b) == 0 {
			continue
		}
		if k == len(iov) {
			break
		}
		iov[k].Base = &b[0]
		iov[k].SetLen(len(b))
		k++
	}
	if k == 0 {
		return 0, nil
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(k))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// rawConn is c's syscall.RawConn, nil when c has none (then every read is
// net.Conn's).
func rawConn(c net.Conn) syscall.RawConn {
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			return rc
		}
	}
	return nil
}

// writeAll writes bufs to fd with writev(2), going on after partial writes
// while the socket takes them. rest is what is left unwritten: none, or
// with EAGAIN when the socket is full (the caller finishes through
// net.Conn, which waits). It trims bufs' elements in place.
func writeAll(fd int, bufs [][]byte) (rest [][]byte, err error) {
	for len(bufs) > 0 {
		n, err := rawWritev(fd, bufs)
		if err == unix.EINTR {
			continue
		}
		bufs = trimWritten(bufs, max(n, 0))
		if err != nil {
			return bufs, err
		}
	}
	return nil, nil
}

// trimWritten drops the first n bytes of bufs, and the empty buffers.
func trimWritten(bufs [][]byte, n int) [][]byte {
	for len(bufs) > 0 && n >= len(bufs[0]) {
		n -= len(bufs[0])
		bufs = bufs[1:]
	}
	if n > 0 {
		bufs[0] = bufs[0][n:]
	}
	return bufs
}

// requestWhole reports whether b holds a whole request, head and body, so
// that the parser (readHead, readBody) can read it without another byte. It
// finds lines and the end of the head as readHead does and the body's
// length from Content-Length; a chunked body says false (the blocking path
// reads it). A request the parser refuses at a line within b counts as
// whole: the refusal reads nothing more. FuzzRequestWhole holds it to the
// parser: a wrong "true" would cut a request short.
func requestWhole(b []byte) bool {
	started, n := false, int64(0)
	for {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return false
		}
		line := trimEOL(b[:i+1])
		b = b[i+1:]
		switch {
		case len(line) == 0 && !started:
			continue // empty lines before the request line are skipped
		case len(line) == 0:
			return int64(len(b)) >= n
		case !started:
			started = true // the request line
			continue
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			continue
		}
		switch name := line[:colon]; {
		case bytes.EqualFold(name, []byte("Content-Length")):
			v, ok := parseLength(bytes.Trim(line[colon+1:], " \t"))
			if !ok {
				return true // refused here, no body read
			}
			n = v
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return false
		}
	}
}
