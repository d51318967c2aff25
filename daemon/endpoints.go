package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"os"
	"os/user"
	"strconv"
	"sync"
	"time"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/daemon/contract"
	"github.com/kiln-edge/kiln/daemon/localapi"
	"github.com/kiln-edge/kiln/daemon/pipeline"
	"github.com/kiln-edge/kiln/daemon/serve"
	"github.com/kiln-edge/kiln/systemd"
)

// endpoints opens each pipeline's stable endpoint: its unix socket
// (ServeDir/<p>.sock, mode 0660, group of the read group) and optional TCP
// address. The unix listener is handed to systemd's fd store under
// "serve-<p>" and taken back at the next start, so clients queue instead of
// failing across `systemctl restart kilnd`. Each endpoint's prediction log
// (StateDir/predictions/<p>/) belongs to the admin group, 0750/0640: it
// holds what clients sent.
type endpoints struct {
	paths    config.Paths
	group    string
	admin    string // the admin group: the prediction logs' group
	minFree  int64  // disk.min_free: below it the logs stop keeping inputs
	notify   *systemd.Notifier
	log      *slog.Logger
	mu       sync.Mutex
	open     map[string]*openEndpoint
	inherit  map[string][]net.Listener
	shutdown bool
	ready    chan struct{} // closed after READY: index rebuilds may start
	warned   map[string]bool
}

type openEndpoint struct {
	ep        *serve.Endpoint
	pipeline  string
	listeners []net.Listener
	start     sync.Once
	log       *slog.Logger
}

// serve starts accepting on the endpoint's listeners, once.
func (o *openEndpoint) serve() {
	o.start.Do(func() {
		for _, l := range o.listeners {
			go func() {
				if err := o.ep.Serve(l); err != nil && !errors.Is(err, serve.ErrClosed) {
					o.log.Error("pipeline endpoint stopped serving", "pipeline", o.pipeline, "addr", l.Addr().String(), "err", err)
				}
			}()
		}
	})
}

func newEndpoints(paths config.Paths, group, admin string, minFree int64, notify *systemd.Notifier, log *slog.Logger) *endpoints {
	inherit := map[string][]net.Listener{}
	if ls, err := systemd.Listeners(); err == nil {
		for name, l := range ls {
			if len(name) > len(fdPrefix) && name[:len(fdPrefix)] == fdPrefix {
				inherit[name] = l
			}
		}
	} else {
		log.Warn("socket activation listeners", "err", err)
	}
	return &endpoints{paths: paths, group: group, admin: admin, minFree: minFree, notify: notify, log: log,
		open: map[string]*openEndpoint{}, inherit: inherit, ready: make(chan struct{}), warned: map[string]bool{}}
}

// markReady lets the prediction log index rebuilds start: kilnd calls it
// after READY, so a rebuild's reading never delays the start.
func (e *endpoints) markReady() {
	e.mu.Lock()
	defer e.mu.Unlock()
	select {
	case <-e.ready:
	default:
		close(e.ready)
	}
}

// adminGID is the admin group's id, -1 when it does not exist here.
func (e *endpoints) adminGID() int {
	gid, err := groupID(e.admin)
	if err != nil {
		return -1
	}
	return gid
}

// rotateLog closes p's open log segment, when p is serving.
func (e *endpoints) rotateLog(ctx context.Context, p string) error {
	e.mu.Lock()
	o := e.open[p]
	e.mu.Unlock()
	if o == nil {
		return nil
	}
	return o.ep.RotateLog(ctx)
}

// warnRetentionOnce says whether p's retention warning is new since start.
func (e *endpoints) warnRetentionOnce(p string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.warned[p] {
		return false
	}
	e.warned[p] = true
	return true
}

// rebuildIndexes writes the indexes p's log lacks (a crash, or a segment
// closed by a stop) once kilnd is ready; lookups scan such segments until
// then.
func (e *endpoints) rebuildIndexes(p string) {
	<-e.ready
	n, err := serve.RebuildIndexes(predLogDir(e.paths), p, e.adminGID())
	if err != nil {
		e.log.Warn("prediction log index rebuild", "pipeline", p, "err", err)
	}
	if n > 0 {
		e.log.Info("prediction log indexes rebuilt", "pipeline", p, "segments", n)
	}
}

const fdPrefix = "serve-"

// endpointAdapter lets the pipeline package flip a serve.Endpoint.
type endpointAdapter struct {
	ep *serve.Endpoint
	o  *openEndpoint
}

func (a endpointAdapter) Start() { a.o.serve() }

func (a endpointAdapter) Flip(b pipeline.Backend) pipeline.Backend {
	var prev serve.Backend
	if b == nil {
		prev = a.ep.Flip(nil)
	} else {
		prev = a.ep.Flip(b)
	}
	if prev == nil {
		return nil
	}
	return prev
}

func (a endpointAdapter) Live() pipeline.Backend {
	if b := a.ep.Live(); b != nil {
		return b
	}
	return nil
}

func (a endpointAdapter) WaitIdle(ctx context.Context, model string) error {
	return a.ep.WaitIdle(ctx, model)
}

// Open starts serving spec's endpoint (no model yet: 503 until a flip).
func (e *endpoints) Open(spec *config.Pipeline) (pipeline.Endpoint, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.shutdown {
		return nil, errors.New("kilnd is stopping")
	}
	if o, ok := e.open[spec.Name]; ok {
		// A reload: the log follows the new spec from the next record.
		o.ep.SetLogPolicy(logPolicy(spec.Monitor.Log))
		o.ep.SetProtocol(spec.Serve.Protocol)
		return endpointAdapter{o.ep, o}, nil
	}
	ep, err := serve.New(serve.Options{Pipeline: spec.Name, PredLogDir: predLogDir(e.paths),
		Protocol: spec.Serve.Protocol, LogPolicy: logPolicy(spec.Monitor.Log), LogGroup: e.admin,
		MinFreeBytes: e.minFree, Log: e.log})
	if err != nil {
		return nil, err
	}
	go e.rebuildIndexes(spec.Name)
	o := &openEndpoint{ep: ep, pipeline: spec.Name, log: e.log}
	l, err := e.unixListener(spec.Name)
	if err != nil {
		_ = ep.Shutdown(context.Background())
		return nil, err
	}
	o.listeners = append(o.listeners, l)
	if addr := spec.Serve.Listen; addr != "" {
		tl, err := net.Listen("tcp", addr)
		if err != nil {
			e.log.Error("pipeline endpoint: TCP listener not opened; the unix socket serves", "pipeline", spec.Name, "listen", addr, "err", err)
		} else {
			o.listeners = append(o.listeners, tl)
		}
	}
	e.open[spec.Name] = o
	return endpointAdapter{ep, o}, nil
}

// unixListener takes the listener kept in systemd's fd store, else creates
// the socket and hands a copy to the fd store for the next start.
func (e *endpoints) unixListener(p string) (net.Listener, error) {
	name := fdPrefix + p
	if ls := e.inherit[name]; len(ls) > 0 {
		delete(e.inherit, name)
		for _, extra := range ls[1:] {
			_ = extra.Close()
		}
		e.log.Info("pipeline endpoint listener taken back from systemd", "pipeline", p)
		return ls[0], nil
	}
	path := e.paths.ServeSocket(p)
	l, err := localapi.Listen(path, 0o660)
	if err != nil {
		return nil, fmt.Errorf("pipeline %s endpoint: %w", p, err)
	}
	// The socket outlives this kilnd (fd store, RuntimeDirectoryPreserve).
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	if gid, err := groupID(e.group); err == nil {
		if err := os.Chown(path, -1, gid); err != nil {
			e.log.Warn("chown pipeline endpoint socket", "path", path, "err", err)
		}
	}
	if e.notify.Enabled() {
		if f, err := l.(*net.UnixListener).File(); err == nil {
			if err := e.notify.StoreFDs(name, f); err != nil {
				e.log.Warn("store endpoint listener with systemd", "pipeline", p, "err", err)
			}
			_ = f.Close() // systemd holds its own copy
		}
	}
	return l, nil
}

func groupID(name string) (int, error) {
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(g.Gid)
}

// Close stops a removed pipeline's endpoint and removes its socket.
func (e *endpoints) Close(p string) error {
	e.mu.Lock()
	o := e.open[p]
	delete(e.open, p)
	e.mu.Unlock()
	if o == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := o.ep.Shutdown(ctx)
	if e.notify.Enabled() {
		err = errors.Join(err, e.notify.RemoveFDs(fdPrefix+p))
	}
	if rerr := os.Remove(e.paths.ServeSocket(p)); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		err = errors.Join(err, rerr)
	}
	return err
}

// predict forwards a `kiln predict` body to p's endpoint over its socket,
// so the answer is exactly what any client of the endpoint gets. The body
// is one request in SageMaker's form, as `kiln predict` sends it: CSV rows
// (text/csv, no header, features in training order), JSON Lines
// (application/jsonlines) or one image (application/x-image, image/png,
// image/jpeg). A sagemaker pipeline gets it as it came; an OIP v2 pipeline
// gets it encoded in its protocol (contract.Encode: the FP64 tensor for
// rows, a one-element BYTES tensor for an image), so its answer is the
// model's own.
func (e *endpoints) predict(w http.ResponseWriter, r *http.Request, p, protocol string) {
	e.mu.Lock()
	_, ok := e.open[p]
	e.mu.Unlock()
	if !ok {
		localapi.WriteError(w, http.StatusNotFound, fmt.Sprintf("no pipeline %q is serving", p))
		return
	}
	sock := e.paths.ServeSocket(p)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	defer hc.CloseIdleConnections()
	path, ctype, body := "/invocations", r.Header.Get("Content-Type"), io.Reader(r.Body)
	if protocol == contract.ProtocolV2 {
		raw, err := io.ReadAll(io.LimitReader(r.Body, serve.DefaultMaxRequestBytes+1))
		if err != nil {
			localapi.WriteError(w, http.StatusBadRequest, "read the request: "+err.Error())
			return
		}
		if len(raw) > serve.DefaultMaxRequestBytes {
			localapi.WriteError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("more than %d bytes of input", serve.DefaultMaxRequestBytes))
			return
		}
		enc, status, err := encodeV2(p, ctype, raw)
		if err != nil {
			localapi.WriteError(w, status, err.Error())
			return
		}
		path, ctype, body = enc.Path, enc.ContentType, bytes.NewReader(enc.Body)
	}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, "http://endpoint"+path, body)
	if err != nil {
		localapi.WriteError(w, http.StatusInternalServerError, err.Error())
		return
	}
	req.Header.Set("Content-Type", ctype)
	resp, err := hc.Do(req)
	if err != nil {
		localapi.WriteError(w, http.StatusBadGateway, fmt.Sprintf("pipeline %s endpoint %s: %v", p, sock, err))
		return
	}
	defer func() { _ = resp.Body.Close() }() // read side
	for _, h := range []string{"Content-Type", "X-Kiln-Request-Id", "X-Kiln-Model"} {
		if v := resp.Header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body) // the client went away: nothing to do
}

// encodeV2 turns a `kiln predict` body in SageMaker's form into p's OIP
// v2 request; the status goes with the error.
func encodeV2(p, ctype string, raw []byte) (contract.Request, int, error) {
	mt := contract.ContentTypeCSV
	if ctype != "" {
		var err error
		if mt, _, err = mime.ParseMediaType(ctype); err != nil {
			return contract.Request{}, http.StatusUnsupportedMediaType, fmt.Errorf("Content-Type %q: %w", ctype, err)
		}
	}
	var in contract.Inputs
	switch mt {
	case contract.ContentTypeCSV:
		rows, err := contract.DecodeRequest(contract.ProtocolSageMaker, contract.ContentTypeCSV, raw)
		if err != nil {
			return contract.Request{}, http.StatusBadRequest, fmt.Errorf("pipeline %s speaks OIP v2: rows must be CSV numbers: %w", p, err)
		}
		in = contract.Inputs{Format: contract.FormatCSV, Rows: rows}
	case contract.ContentTypeImage, "image/png", "image/jpeg":
		in = contract.Inputs{Format: contract.FormatImages, Images: [][]byte{raw}}
	case contract.ContentTypeJSONLines:
		// v2's tensor is in training order, which JSON Lines keys do not carry.
		return contract.Request{}, http.StatusUnsupportedMediaType, fmt.Errorf("pipeline %s speaks OIP v2, whose rows are in training order: send CSV rows in that order (kiln predict converts JSON Lines)", p)
	default:
		return contract.Request{}, http.StatusUnsupportedMediaType, fmt.Errorf("Content-Type %q: want %s, %s or %s", ctype, contract.ContentTypeCSV, contract.ContentTypeImage, contract.ContentTypeJSONLines)
	}
	reqs, err := contract.Encode(contract.ProtocolV2, p, in)
	if err != nil {
		return contract.Request{}, http.StatusBadRequest, fmt.Errorf("pipeline %s speaks OIP v2: %w", p, err)
	}
	return reqs[0], 0, nil
}

// shutdownAll drains every endpoint at kilnd stop. Sockets stay: the next
// kilnd (or systemd's fd store) serves them again.
func (e *endpoints) shutdownAll(ctx context.Context) error {
	e.mu.Lock()
	e.shutdown = true
	open := e.open
	e.open = map[string]*openEndpoint{}
	for _, ls := range e.inherit {
		for _, l := range ls {
			_ = l.Close() // a pipeline that no longer exists
		}
	}
	e.mu.Unlock()
	var errs []error
	for _, o := range open {
		errs = append(errs, o.ep.Shutdown(ctx))
	}
	return errors.Join(errs...)
}
