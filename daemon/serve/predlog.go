package serve

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// Prediction is one line of the prediction log.
type Prediction struct {
	RequestID string    `json:"id"`
	Model     string    `json:"model"`
	Time      time.Time `json:"time"` // when the request arrived
	LatencyUS int64     `json:"latency_us"`
	Status    int       `json:"status"`
	// InputSHA256 is the hex sha256 of the request body.
	InputSHA256 string `json:"input_sha256"`
	// Output is the response body, cut at Options.OutputCap bytes (then
	// OutputTruncated is set). Bytes that are not UTF-8 read back as U+FFFD.
	Output          string `json:"output"`
	OutputTruncated bool   `json:"output_truncated,omitempty"`
}

// ErrNotFound is returned by Lookup for a request id that is not in the log.
var ErrNotFound = errors.New("not found")

const segExt = ".jsonl"

// predLog is the append side: requests encode their line into buf under mu;
// the writer goroutine swaps buf for spare, writes and syncs.
type predLog struct {
	dir      string
	segBytes int64
	maxSegs  int
	maxBuf   int
	interval time.Duration
	log      *slog.Logger

	mu     sync.Mutex
	buf    []byte
	closed bool

	wake     chan struct{} // cap 1: the buffer went from empty to not
	flushReq chan chan error
	stop     chan struct{}
	done     chan struct{}

	written, dropped, errors atomic.Uint64

	// Owned by the writer goroutine.
	spare []byte
	f     *os.File
	size  int64
	segs  []uint64 // segment numbers on disk, ascending; the last is f
	err   error    // the last write error, reported by flush
}

func openPredLog(opt Options, log *slog.Logger) (*predLog, error) {
	dir := filepath.Join(opt.PredLogDir, opt.Pipeline)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("serve: prediction log folder: %w", err)
	}
	segs, err := listSegments(dir)
	if err != nil {
		return nil, fmt.Errorf("serve: prediction log: %w", err)
	}
	p := &predLog{
		dir: dir, segBytes: opt.SegmentBytes, maxSegs: opt.MaxSegments, maxBuf: opt.LogBuffer,
		interval: opt.SyncInterval, log: log.With("prediction_log", dir),
		buf: make([]byte, 0, min(opt.LogBuffer, 64<<10)), spare: make([]byte, 0, min(opt.LogBuffer, 64<<10)),
		wake: make(chan struct{}, 1), flushReq: make(chan chan error), stop: make(chan struct{}), done: make(chan struct{}),
		segs: segs,
	}
	// A new start gets a new segment, so a line a crash may have torn is
	// only ever the last of an older file.
	if err := p.openNext(); err != nil {
		return nil, fmt.Errorf("serve: prediction log: %w", err)
	}
	go p.run()
	return p, nil
}

// listSegments returns the segment numbers in dir, ascending.
func listSegments(dir string) ([]uint64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var segs []uint64
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), segExt)
		if !ok || !e.Type().IsRegular() {
			continue
		}
		if n, err := strconv.ParseUint(name, 10, 64); err == nil {
			segs = append(segs, n)
		}
	}
	slices.Sort(segs)
	return segs, nil
}

func segName(dir string, n uint64) string {
	return filepath.Join(dir, fmt.Sprintf("%012d%s", n, segExt))
}

// append encodes one record into the buffer, or drops and counts it when
// the buffer is full or the log closed. It never waits for the disk.
func (p *predLog) append(id []byte, model string, t time.Time, lat time.Duration, body []byte, status int, out []byte, truncated bool) {
	sum := sha256.Sum256(body)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.dropped.Add(1)
		return
	}
	start := len(p.buf)
	b := append(p.buf, `{"id":`...)
	b = appendJSONString(b, id)
	b = append(b, `,"model":`...)
	b = appendJSONString(b, model)
	b = append(b, `,"time":"`...)
	b = t.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","latency_us":`...)
	b = strconv.AppendInt(b, lat.Microseconds(), 10)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, `,"input_sha256":"`...)
	b = hex.AppendEncode(b, sum[:])
	b = append(b, `","output":`...)
	b = appendJSONString(b, out)
	if truncated {
		b = append(b, `,"output_truncated":true`...)
	}
	b = append(b, "}\n"...)
	if len(b) > p.maxBuf && start > 0 {
		p.buf = b[:start]
		p.mu.Unlock()
		p.dropped.Add(1)
		return
	}
	p.buf = b
	p.mu.Unlock()
	if start == 0 {
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

// appendJSONString appends s as a JSON string; invalid UTF-8 becomes U+FFFD.
func appendJSONString[S ~string | ~[]byte](b []byte, s S) []byte {
	const hexd = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hexd[c>>4], hexd[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		var rb [utf8.UTFMax]byte
		r, n := utf8.DecodeRune(rb[:copy(rb[:], s[i:])])
		if r == utf8.RuneError && n == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+n]...)
		}
		i += n
	}
	return append(b, '"')
}

// run is the writer: it takes what requests appended, writes it and syncs,
// at most once per interval, until stop.
func (p *predLog) run() {
	defer close(p.done)
	var last time.Time
	t := time.NewTimer(0)
	<-t.C
	for {
		var reply chan error
		select {
		case <-p.wake:
			// Group commit: let a sync's worth of records gather.
			if d := p.interval - time.Since(last); d > 0 {
				t.Reset(d)
				select {
				case <-t.C:
				case <-p.stop:
					t.Stop()
				}
			}
		case reply = <-p.flushReq:
		case <-p.stop:
		}
		p.mu.Lock()
		b := p.buf
		p.buf = p.spare[:0]
		closed := p.closed
		p.mu.Unlock()
		if len(b) > 0 {
			p.write(b)
			last = time.Now()
		}
		p.spare = b[:0]
		if reply != nil {
			reply <- p.err
		}
		if closed {
			if p.f != nil {
				if err := p.f.Close(); err != nil && p.err == nil {
					p.err = err
				}
			}
			return
		}
	}
}

// write puts b (whole lines) into segments, rotating at segBytes without
// splitting a line, then syncs.
func (p *predLog) write(b []byte) {
	records := lines(b)
	for len(b) > 0 {
		if p.f == nil {
			if err := p.openNext(); err != nil {
				p.fail("open segment", err)
				p.dropped.Add(lines(b))
				return
			}
		}
		chunk := b
		if room := p.segBytes - p.size; int64(len(b)) > room {
			cut := 0
			if room > 0 {
				cut = bytes.LastIndexByte(b[:room], '\n') + 1
			}
			if cut == 0 && p.size == 0 {
				cut = bytes.IndexByte(b, '\n') + 1 // one line longer than a segment: alone
			}
			chunk = b[:cut]
		}
		if len(chunk) > 0 {
			n, err := p.f.Write(chunk)
			p.size += int64(n)
			if err != nil {
				p.fail("write", err)
				p.closeSegment()
				p.dropped.Add(lines(b))
				return
			}
		}
		b = b[len(chunk):]
		if len(b) > 0 || p.size >= p.segBytes {
			p.closeSegment()
		}
	}
	if p.f != nil {
		if err := unix.Fdatasync(int(p.f.Fd())); err != nil {
			p.fail("sync", err)
			return
		}
	}
	p.written.Add(records)
	p.err = nil
}

// lines counts the records in b.
func lines(b []byte) uint64 {
	return uint64(bytes.Count(b, []byte{'\n'})) //nolint:gosec // a count is never negative
}

func (p *predLog) fail(what string, err error) {
	p.errors.Add(1)
	p.err = fmt.Errorf("prediction log %s: %s: %w", p.dir, what, err)
	p.log.Warn("prediction log "+what+" failed", "err", err)
}

// closeSegment syncs and closes the current segment; the next write opens
// a new one.
func (p *predLog) closeSegment() {
	if p.f == nil {
		return
	}
	if err := unix.Fdatasync(int(p.f.Fd())); err != nil {
		p.fail("sync", err)
	}
	if err := p.f.Close(); err != nil {
		p.fail("close", err)
	}
	p.f = nil
}

// openNext creates the next segment and deletes the oldest beyond maxSegs.
func (p *predLog) openNext() error {
	n := uint64(1)
	if len(p.segs) > 0 {
		n = p.segs[len(p.segs)-1] + 1
	}
	f, err := os.OpenFile(segName(p.dir, n), os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	p.f, p.size = f, 0
	p.segs = append(p.segs, n)
	for len(p.segs) > p.maxSegs {
		if err := os.Remove(segName(p.dir, p.segs[0])); err != nil && !errors.Is(err, os.ErrNotExist) {
			p.fail("remove old segment", err)
		}
		p.segs = p.segs[1:]
	}
	// The new name must survive a crash as surely as the lines in it.
	if d, err := os.Open(p.dir); err == nil {
		_ = d.Sync() // best effort: the next segment's sync covers it
		_ = d.Close()
	}
	return nil
}

func (p *predLog) flush(ctx context.Context) error {
	reply := make(chan error, 1)
	select {
	case p.flushReq <- reply:
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// close flushes what is buffered, syncs and closes the segment. Records
// appended after close are dropped and counted.
func (p *predLog) close() error {
	p.mu.Lock()
	already := p.closed
	p.closed = true
	p.mu.Unlock()
	if !already {
		close(p.stop)
	}
	<-p.done
	return p.err
}

// Scan reads pipeline's prediction log under predLogDir (Options.PredLogDir),
// oldest first, calling fn for each record until fn returns an error, which
// Scan returns. A torn last line (a crash mid-write) is skipped.
func Scan(predLogDir, pipeline string, fn func(Prediction) error) error {
	dir := filepath.Join(predLogDir, pipeline)
	segs, err := listSegments(dir)
	if err != nil {
		return fmt.Errorf("prediction log %s: %w", dir, err)
	}
	for _, n := range segs {
		err := scanSegment(segName(dir, n), nil, func(line []byte) error {
			var p Prediction
			if err := json.Unmarshal(line, &p); err != nil {
				return nil // a torn line
			}
			return fn(p)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Lookup finds the record of request id in pipeline's prediction log,
// newest segment first. Records the endpoint has not flushed yet are not
// seen (Endpoint.FlushLog).
func Lookup(predLogDir, pipeline, id string) (Prediction, error) {
	dir := filepath.Join(predLogDir, pipeline)
	segs, err := listSegments(dir)
	if err != nil {
		return Prediction{}, fmt.Errorf("prediction log %s: %w", dir, err)
	}
	prefix := appendJSONString([]byte(`{"id":`), id)
	prefix = append(prefix, ',')
	errFound := errors.New("found")
	var found Prediction
	for _, n := range slices.Backward(segs) {
		err := scanSegment(segName(dir, n), prefix, func(line []byte) error {
			if err := json.Unmarshal(line, &found); err != nil {
				return nil
			}
			return errFound
		})
		if err == errFound {
			return found, nil
		}
		if err != nil {
			return Prediction{}, err
		}
	}
	return Prediction{}, fmt.Errorf("request %s in prediction log %s: %w", id, dir, ErrNotFound)
}

// scanSegment calls fn for each whole line of the file that starts with
// prefix (every line when prefix is nil). A segment deleted by rotation
// while it is read counts as empty.
func scanSegment(name string, prefix []byte, fn func([]byte) error) error {
	f, err := os.Open(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }() // read-only: nothing to lose
	br := bufio.NewReaderSize(f, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if err == io.EOF {
			return nil // a last line without its newline is torn: skip it
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
		if prefix != nil && !bytes.HasPrefix(line, prefix) {
			continue
		}
		if err := fn(line); err != nil {
			return err
		}
	}
}
