// Package apiclient is the typed client of kilnd's local API: one method per
// route, over the unix socket. The CLI holds one Client; so do tests and the
// benchmark harness.
package apiclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/kiln-edge/kiln/daemon/api"
)

// DefaultSocket is where kilnd listens unless told otherwise.
const DefaultSocket = "/run/kiln/kiln.sock"

// EnvSocket names the environment variable that points the CLI at a socket.
// It is deliberately not KILN_SOCKET, which is the serving container's variable.
const EnvSocket = "KILN_API_SOCKET"

// Client talks to one kilnd.
type Client struct {
	socket string
	hc     *http.Client
}

// New returns a client for the socket at path ("" = $KILN_API_SOCKET, else DefaultSocket).
func New(path string) *Client {
	if path == "" {
		path = os.Getenv(EnvSocket)
	}
	if path == "" {
		path = DefaultSocket
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		MaxIdleConns:    4,
		IdleConnTimeout: 30 * time.Second,
	}
	return &Client{socket: path, hc: &http.Client{Transport: tr}}
}

// Socket is the path this client dials.
func (c *Client) Socket() string { return c.socket }

// Error is a non-2xx answer from kilnd.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string { return e.Message }

// IsForbidden reports whether err is kilnd refusing the caller.
func IsForbidden(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusForbidden
}

// Status calls GET /v1/status.
func (c *Client) Status(ctx context.Context) (api.Status, error) {
	var s api.Status
	return s, c.do(ctx, http.MethodGet, api.PathStatus, nil, &s)
}

// Version calls GET /v1/version.
func (c *Client) Version(ctx context.Context) (api.VersionInfo, error) {
	var v api.VersionInfo
	return v, c.do(ctx, http.MethodGet, api.PathVersion, nil, &v)
}

// Doctor calls GET /v1/doctor.
func (c *Client) Doctor(ctx context.Context) (api.Doctor, error) {
	var d api.Doctor
	return d, c.do(ctx, http.MethodGet, api.PathDoctor, nil, &d)
}

// Pipelines calls GET /v1/pipelines.
func (c *Client) Pipelines(ctx context.Context) ([]api.Pipeline, error) {
	var ps []api.Pipeline
	return ps, c.do(ctx, http.MethodGet, api.PathPipelines, nil, &ps)
}

// Pipeline calls GET /v1/pipelines/{name}.
func (c *Client) Pipeline(ctx context.Context, name string) (api.Pipeline, error) {
	var p api.Pipeline
	return p, c.do(ctx, http.MethodGet, withName(api.PathPipeline, name), nil, &p)
}

// ReloadPipelines calls POST /v1/pipelines/reload. A rejected reload is an
// error carrying kilnd's reason (the old set keeps running).
func (c *Client) ReloadPipelines(ctx context.Context) (api.ReloadResult, error) {
	var r api.ReloadResult
	return r, c.do(ctx, http.MethodPost, api.PathPipelinesReload, nil, &r)
}

// GPU calls GET /v1/gpu.
func (c *Client) GPU(ctx context.Context) (api.GPUReport, error) {
	var r api.GPUReport
	return r, c.do(ctx, http.MethodGet, api.PathGPU, nil, &r)
}

// CordonGPU calls POST /v1/gpu/{gpu}/cordon; gpu is an index or UUID.
func (c *Client) CordonGPU(ctx context.Context, gpu, reason string) (api.GPUReport, error) {
	var r api.GPUReport
	body, err := json.Marshal(api.CordonRequest{Reason: reason})
	if err != nil {
		return r, err
	}
	return r, c.do(ctx, http.MethodPost, withParam(api.PathGPUCordon, "{gpu}", gpu), bytes.NewReader(body), &r)
}

// UncordonGPU calls POST /v1/gpu/{gpu}/uncordon.
func (c *Client) UncordonGPU(ctx context.Context, gpu string) (api.GPUReport, error) {
	var r api.GPUReport
	return r, c.do(ctx, http.MethodPost, withParam(api.PathGPUUncordon, "{gpu}", gpu), nil, &r)
}

// Events calls GET /v1/events?since=SEQ&limit=N.
func (c *Client) Events(ctx context.Context, since uint64, limit int) ([]api.Event, error) {
	var es []api.Event
	q := url.Values{"since": {fmt.Sprint(since)}, "limit": {fmt.Sprint(limit)}}
	return es, c.do(ctx, http.MethodGet, api.PathEvents+"?"+q.Encode(), nil, &es)
}

// FollowEvents streams events from since on, calling fn for each until ctx
// ends, fn fails or kilnd closes the stream.
func (c *Client) FollowEvents(ctx context.Context, since uint64, fn func(api.Event) error) error {
	q := url.Values{"since": {fmt.Sprint(since)}, "follow": {"1"}}
	resp, err := c.send(ctx, http.MethodGet, api.PathEvents+"?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }() // read side: nothing to lose on close
	dec := json.NewDecoder(resp.Body)
	for {
		var e api.Event
		if err := dec.Decode(&e); err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("read event stream: %w", err)
		}
		if err := fn(e); err != nil {
			return err
		}
	}
}

// Expecter is what a writer given to Backup or BackupPredictions may also
// be: it is told the stream's length, when kilnd sends one, before the
// first byte, so the caller can show progress.
type Expecter interface{ Expect(total int64) }

func expect(w io.Writer, resp *http.Response) {
	if x, ok := w.(Expecter); ok && resp.ContentLength >= 0 {
		x.Expect(resp.ContentLength)
	}
}

// Backup streams a consistent copy of kilnd's database into w.
func (c *Client) Backup(ctx context.Context, w io.Writer) (int64, error) {
	resp, err := c.send(ctx, http.MethodGet, api.PathBackup, nil)
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }() // read side: nothing to lose on close
	expect(w, resp)
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("read backup stream: %w", err)
	}
	return n, nil
}

// GC calls POST /v1/gc (?dry_run=1 to only report; ?images=1 to also
// delete images nothing kept needs; ?foreign=1 to also remove containers of
// other installations).
func (c *Client) GC(ctx context.Context, dryRun, images, foreign bool) (api.GCReport, error) {
	var r api.GCReport
	q := url.Values{}
	if dryRun {
		q.Set("dry_run", "1")
	}
	if images {
		q.Set("images", "1")
	}
	if foreign {
		q.Set("foreign", "1")
	}
	path := api.PathGC
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	return r, c.do(ctx, http.MethodPost, path, nil, &r)
}

// Metrics fetches the Prometheus exposition text from /metrics.
func (c *Client) Metrics(ctx context.Context) (string, error) {
	resp, err := c.send(ctx, http.MethodGet, api.PathMetrics, nil)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }() // read side: nothing to lose on close
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func withName(pattern, name string) string { return withParam(pattern, "{name}", name) }

func withParam(pattern, param, value string) string {
	return strings.Replace(pattern, param, url.PathEscape(value), 1)
}

func (c *Client) do(ctx context.Context, method, path string, body io.Reader, out any) error {
	resp, err := c.send(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }() // read side: nothing to lose on close
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode %s %s answer: %w", method, path, err)
	}
	return nil
}

// send performs the request and turns transport failures and non-2xx answers
// into one-line errors a person can act on. On success the caller owns the body.
func (c *Client) send(ctx context.Context, method, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://kilnd"+path, body)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.dialError(err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer func() { _ = resp.Body.Close() }() // read side: nothing to lose on close
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e api.Error
	if json.Unmarshal(b, &e) != nil || e.Error == "" {
		e.Error = strings.TrimSpace(string(b))
	}
	if e.Error == "" {
		e.Error = resp.Status
	}
	return nil, &Error{Status: resp.StatusCode, Message: e.Error}
}

func (c *Client) dialError(err error) error {
	switch {
	case errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("kilnd is not running: no socket at %s (start it with `systemctl start kilnd`, or point --socket / %s at it)", c.socket, EnvSocket)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("kilnd is not running: nothing listens on %s, a stale socket (start it with `systemctl start kilnd`: it replaces the socket; `journalctl -u kilnd` says why it stopped)", c.socket)
	case errors.Is(err, syscall.EACCES):
		return fmt.Errorf("cannot open %s: permission denied (its folder must let you in: root and the kiln groups may use kilnd; ask an admin to add you, e.g. usermod -aG kiln USER, then log in again)", c.socket)
	}
	return fmt.Errorf("talk to kilnd at %s: %w", c.socket, err)
}
