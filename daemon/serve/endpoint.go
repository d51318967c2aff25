package serve

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os/user"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Backend is one model's serving container, as the runtime exposes it.
type Backend interface {
	// Model is the model id that answers through this backend, e.g. "iris/m7".
	Model() string
	// DialContext opens a stream connection to the container's server: its
	// unix socket, or TCP inside its network namespace.
	DialContext(ctx context.Context) (net.Conn, error)
}

// ErrClosed is what Serve returns once Shutdown has begun.
var ErrClosed = http.ErrServerClosed

// Defaults for the zero values of Options.
const (
	DefaultSegmentBytes    = 64 << 20
	DefaultOutputCap       = 1 << 20
	DefaultLogBuffer       = 8 << 20
	DefaultSyncInterval    = 10 * time.Millisecond
	DefaultMaxIdleConns    = 64
	DefaultTimeout         = 60 * time.Second
	DefaultMaxRequestBytes = 32 << 20
)

// Options configure an Endpoint; zero values take the defaults above.
type Options struct {
	// Pipeline names the pipeline; it names the log folder and error messages.
	Pipeline string
	// PredLogDir is the root of the prediction logs: this pipeline's segments
	// go to PredLogDir/<Pipeline>/. Empty turns the log off.
	PredLogDir string
	// Protocol is the pipeline's serve.protocol ("sagemaker" or "v2"),
	// recorded with each prediction so it can be replayed.
	Protocol string
	// SegmentBytes closes a segment at this size (and indexes it).
	SegmentBytes int64
	// LogPolicy is the log's retention and which inputs it keeps; the zero
	// value keeps everything. SetLogPolicy changes it.
	LogPolicy LogPolicy
	// LogGroup names the group the log's folder and files belong to (the
	// daemon's admin group): they are 0750/0640, for root and that group
	// only. Empty leaves the group as created.
	LogGroup string
	// MinFreeBytes is the daemon's free-disk floor: below it the log stops
	// keeping inputs (and says so in the log) until there is room again.
	MinFreeBytes int64
	// OutputCap is how much of each response body the log keeps; a longer
	// answer is logged cut, with Record.OutputTruncated.
	OutputCap int
	// LogBuffer bounds the records waiting for the writer, in bytes; past it
	// records are dropped and counted, never waited for.
	LogBuffer int
	// SyncInterval is the group-fsync period: the writer syncs at most this often.
	SyncInterval time.Duration
	// MaxIdleConns is the keep-alive pool size per backend; it should be at
	// least the number of concurrent clients expected.
	MaxIdleConns int
	// Timeout bounds one request's whole exchange with the backend (504 past it).
	Timeout time.Duration
	// MaxRequestBytes bounds a request body (413 past it).
	MaxRequestBytes int64
	// Log receives the endpoint's own messages (rate-limited on the hot path).
	Log *slog.Logger
}

var pipelineName = regexp.MustCompile(`^[a-z0-9-]{1,32}$`)

// Endpoint is one pipeline's stable endpoint. Its methods are safe for
// concurrent use.
type Endpoint struct {
	opt    Options
	log    *slog.Logger
	plog   *predLog // nil when the log is off
	idPfx  string
	idSeq  atomic.Uint64
	live   atomic.Pointer[route]
	flipMu sync.Mutex
	old    []*route // retired routes that may still have requests in flight

	mu        sync.Mutex // guards listeners and conns
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	connWG    sync.WaitGroup
	reaping   bool // a reap goroutine runs
	closing   atomic.Bool

	// dialCtx is the context of backend dials: the endpoint's lifetime, not
	// a caller's (requests have none); a forced Shutdown cancels it.
	dialCtx    context.Context
	cancelDial context.CancelFunc

	requests, noModel, badRequests, backendErrs, aborted, retries atomic.Uint64

	lastWarn   atomic.Int64 // unix nanos of the last hot-path warning
	suppressed atomic.Uint64
}

// Stats are the endpoint's counters since New.
type Stats struct {
	Requests      uint64 // answered by a backend (any status)
	NoModel       uint64 // 503: no live model
	BadRequests   uint64 // 4xx/5xx kiln gave a malformed or oversized request
	BackendErrors uint64 // 502/504: the backend failed before answering
	Aborted       uint64 // the backend failed in the middle of a response body
	Retries       uint64 // requests resent after a pooled connection had gone stale
	LogWritten    uint64 // prediction records written to disk
	LogDropped    uint64 // prediction records dropped because the buffer was full
	LogErrors     uint64 // failed writes or syncs of the prediction log
	// LogInputsSkipped counts records logged without the input they were
	// to keep: the disk was below its floor, or an input file failed.
	LogInputsSkipped uint64
}

// New builds an endpoint for opt.Pipeline and, when opt.PredLogDir is set,
// opens its prediction log (a new segment).
func New(opt Options) (*Endpoint, error) {
	if !pipelineName.MatchString(opt.Pipeline) {
		return nil, fmt.Errorf("serve: pipeline name %q is not [a-z0-9-]{1,32}", opt.Pipeline)
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	if opt.SegmentBytes <= 0 {
		opt.SegmentBytes = DefaultSegmentBytes
	}
	def(&opt.OutputCap, DefaultOutputCap)
	def(&opt.LogBuffer, DefaultLogBuffer)
	def(&opt.MaxIdleConns, DefaultMaxIdleConns)
	if opt.SyncInterval <= 0 {
		opt.SyncInterval = DefaultSyncInterval
	}
	if opt.Timeout <= 0 {
		opt.Timeout = DefaultTimeout
	}
	if opt.MaxRequestBytes <= 0 {
		opt.MaxRequestBytes = DefaultMaxRequestBytes
	}
	log := opt.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("pipeline", opt.Pipeline)
	var pfx [6]byte
	if _, err := rand.Read(pfx[:]); err != nil {
		return nil, fmt.Errorf("serve: request id prefix: %w", err)
	}
	e := &Endpoint{opt: opt, log: log, idPfx: hex.EncodeToString(pfx[:]) + "-",
		listeners: map[net.Listener]struct{}{}, conns: map[*conn]struct{}{}}
	e.dialCtx, e.cancelDial = context.WithCancel(context.Background())
	if opt.PredLogDir != "" {
		gid := -1
		if opt.LogGroup != "" {
			if g, err := user.LookupGroup(opt.LogGroup); err != nil {
				log.Warn("prediction log: group not found; the log's files keep the daemon's group", "group", opt.LogGroup, "err", err)
			} else if gid, err = strconv.Atoi(g.Gid); err != nil {
				gid = -1
			}
		}
		pl, err := openPredLog(opt, gid, log)
		if err != nil {
			return nil, err
		}
		e.plog = pl
	}
	return e, nil
}

// Flip makes b the live backend and returns the one it replaces (nil if
// none). When Flip returns, every new request goes to b; requests already in
// flight finish on the previous backend, whose pooled connections are closed
// as they come free. Flip(nil) takes the model off (503 until the next Flip).
func (e *Endpoint) Flip(b Backend) (previous Backend) {
	var r *route
	if b != nil {
		r = newRoute(b, e.opt.MaxIdleConns, e.opt.Timeout)
	}
	e.flipMu.Lock()
	defer e.flipMu.Unlock()
	old := e.live.Swap(r)
	if old == nil {
		return nil
	}
	old.retire()
	kept := e.old[:0]
	for _, o := range e.old {
		if !o.isDrained() {
			kept = append(kept, o)
		}
	}
	e.old = append(kept, old)
	return old.b
}

// Live is the backend new requests go to, nil before the first model.
func (e *Endpoint) Live() Backend {
	if r := e.live.Load(); r != nil {
		return r.b
	}
	return nil
}

// WaitIdle waits until no request is in flight on a retired route to model:
// after it returns, the previous model's container may be stopped without
// failing a request. It returns at once if model was never flipped away.
func (e *Endpoint) WaitIdle(ctx context.Context, model string) error {
	e.flipMu.Lock()
	var wait []*route
	for _, o := range e.old {
		if o.model == model {
			wait = append(wait, o)
		}
	}
	e.flipMu.Unlock()
	for _, o := range wait {
		select {
		case <-o.drained:
		case <-ctx.Done():
			return fmt.Errorf("serve %s: wait for requests on %s: %w", e.opt.Pipeline, model, ctx.Err())
		}
	}
	return nil
}

// Stats returns the endpoint's counters.
func (e *Endpoint) Stats() Stats {
	s := Stats{
		Requests:      e.requests.Load(),
		NoModel:       e.noModel.Load(),
		BadRequests:   e.badRequests.Load(),
		BackendErrors: e.backendErrs.Load(),
		Aborted:       e.aborted.Load(),
		Retries:       e.retries.Load(),
	}
	if e.plog != nil {
		s.LogWritten = e.plog.written.Load()
		s.LogDropped = e.plog.dropped.Load()
		s.LogErrors = e.plog.errors.Load()
		s.LogInputsSkipped = e.plog.inputsSkipped.Load()
	}
	return s
}

// FlushLog waits until every prediction record appended before the call is
// on disk (fsynced). It is for tests and for readers that must see the
// latest requests; serving never needs it.
func (e *Endpoint) FlushLog(ctx context.Context) error {
	if e.plog == nil {
		return nil
	}
	return e.plog.flush(ctx, false)
}

// RotateLog closes the segment being written (after FlushLog's work), so
// that Purge can reach every record logged so far; the next record opens a
// new segment.
func (e *Endpoint) RotateLog(ctx context.Context) error {
	if e.plog == nil {
		return errLogOff
	}
	return e.plog.flush(ctx, true)
}

// SetLogPolicy changes the log's retention and input policy (a pipeline
// reload); it applies from the next record and the next rotation.
func (e *Endpoint) SetLogPolicy(p LogPolicy) {
	if e.plog != nil {
		e.plog.policy.Store(&p)
	}
}

// SetProtocol changes the protocol recorded with each prediction (a reload
// that changed serve.protocol).
func (e *Endpoint) SetProtocol(protocol string) {
	if e.plog != nil {
		e.plog.proto.Store(&protocol)
	}
}

// LogGID is the group id the log's files are given, -1 when none.
func (e *Endpoint) LogGID() int {
	if e.plog == nil {
		return -1
	}
	return e.plog.gid
}

// idleCloseGrace is how long an idle connection stays open once Shutdown
// began, for a request already on its way.
const idleCloseGrace = 100 * time.Millisecond

// Shutdown stops accepting connections (closing the listeners, never
// removing a socket file), closes idle client connections, waits for the
// requests in flight to be answered (each connection then closes), and
// flushes and closes the prediction log. When ctx ends first, the remaining
// connections are cut and ctx's error is returned.
func (e *Endpoint) Shutdown(ctx context.Context) error {
	e.mu.Lock()
	e.closing.Store(true)
	var err error
	for l := range e.listeners {
		if cerr := l.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
			err = errors.Join(err, fmt.Errorf("serve %s: close listener %s: %w", e.opt.Pipeline, l.Addr(), cerr))
		}
	}
	for c := range e.conns {
		// An idle keep-alive connection may already hold a request the
		// client sent an instant ago; closing it now would reset that
		// request. Give it a moment: a request that arrives is served
		// (with Connection: close), a connection that stays quiet closes
		// at the deadline.
		if c.state.Load() == connIdle {
			_ = c.c.SetReadDeadline(time.Now().Add(idleCloseGrace))
		}
	}
	e.mu.Unlock()
	drained := make(chan struct{})
	go func() { e.connWG.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-ctx.Done():
		e.cancelDial()
		e.mu.Lock()
		for c := range e.conns {
			_ = c.c.Close() // out of time: cut it
		}
		e.mu.Unlock()
		err = errors.Join(err, fmt.Errorf("serve %s: drain: %w", e.opt.Pipeline, ctx.Err()))
	}
	e.flipMu.Lock()
	if r := e.live.Load(); r != nil {
		r.closeIdle()
	}
	for _, o := range e.old {
		o.closeIdle()
	}
	e.flipMu.Unlock()
	e.cancelDial()
	if e.plog != nil {
		err = errors.Join(err, e.plog.close())
	}
	return err
}

// reapEvery is how often reap looks for connections past their time.
const reapEvery = time.Second

// reap enforces the client connections' timeouts (conn.expire) while any is
// open: the socket deadline of a connection whose time ran out is set in
// the past, which fails its pending and later reads and writes. Setting a
// deadline per request instead costs two timer updates on every request;
// this sweep costs nothing per request, for timeouts up to reapEvery late.
func (e *Endpoint) reap() {
	for {
		time.Sleep(reapEvery)
		now := time.Now().UnixNano()
		e.mu.Lock()
		if len(e.conns) == 0 {
			e.reaping = false
			e.mu.Unlock()
			return
		}
		for c := range e.conns {
			if exp := c.expire.Load(); now > exp {
				_ = c.c.SetDeadline(time.Unix(1, 0)) // fails only on a closed connection, which is going anyway
			}
		}
		e.mu.Unlock()
	}
}

// acquire returns the live route with this request counted in flight on it,
// or nil when there is no model. The re-check after counting closes the race
// with Flip: a request counted on a route that is no longer live uncounts
// itself and takes the new one, so a retired route's count only falls.
func (e *Endpoint) acquire() *route {
	for {
		r := e.live.Load()
		if r == nil {
			return nil
		}
		r.inflight.Add(1)
		if e.live.Load() == r {
			return r
		}
		r.release()
	}
}

const (
	hdrRequestID = "X-Kiln-Request-Id"
	hdrModel     = "X-Kiln-Model"
)

// newID appends a fresh request id to b: the endpoint's random prefix and
// a counter.
func (e *Endpoint) newID(b []byte) []byte {
	b = append(b, e.idPfx...)
	return strconv.AppendUint(b, e.idSeq.Add(1), 36)
}

// saneID accepts a client's request id of 1-128 visible ASCII bytes.
func saneID(s []byte) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// errorBody is the JSON body of every answer the endpoint makes itself.
type errorBody struct {
	Error     string `json:"error"`
	Pipeline  string `json:"pipeline"`
	Model     string `json:"model,omitempty"`
	RequestID string `json:"request_id"`
}

// warn logs at most once a second from the request path, so a dead backend
// under load cannot flood the journal; the lines it held back are counted.
func (e *Endpoint) warn(msg string, args ...any) {
	now := time.Now().UnixNano()
	last := e.lastWarn.Load()
	if now-last < int64(time.Second) || !e.lastWarn.CompareAndSwap(last, now) {
		e.suppressed.Add(1)
		return
	}
	if n := e.suppressed.Swap(0); n > 0 {
		args = append(args, "suppressed", n)
	}
	e.log.Warn(msg, args...)
}
