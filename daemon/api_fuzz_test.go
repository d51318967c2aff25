//go:build cgo

package daemon

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/gpus"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/gpu/gputest"
)

// fuzzRoutes are the routes whose requests carry what a caller writes: a JSON body, path
// values and a query. Routes that stream forever (events -f), hand out the store (backup),
// or need containerd (images import, train) are left out.
var fuzzRoutes = []struct{ method, path string }{
	{"POST", "/v1/gpu/{gpu}/cordon"},
	{"POST", "/v1/gpu/{gpu}/uncordon"},
	{"POST", "/v1/pipelines/{name}/pin"},
	{"POST", "/v1/pipelines/{name}/unpin"},
	{"POST", "/v1/pipelines/{name}/rollback"},
	{"POST", "/v1/pipelines/{name}/predictions/purge"},
	{"POST", "/v1/models/{pipeline}/{id}/promote"},
	{"POST", "/v1/datasets/{pipeline}/{id}/release"},
	{"POST", "/v1/runs/{pipeline}/{id}/cancel"},
	{"GET", "/v1/events"},
	{"GET", "/v1/lineage/{pipeline}/{id}"},
	{"GET", "/v1/models"},
	{"GET", "/v1/runs"},
	{"GET", "/v1/datasets"},
	{"GET", "/v1/pipelines/{name}/accuracy"},
	{"POST", "/v1/pipelines/{name}/predict"},
	{"POST", "/v1/pipelines/{name}/feedback"},
}

// FuzzAPIRequests sends the control API whatever a local caller may: any body, path value
// and query, to every route that decodes them, on a real kilnd over its real socket. No
// answer may be a 5xx (what a caller sends is the caller's fault, and kiln says so with a
// 4xx), every refusal is a JSON error of one line, and kilnd still answers afterwards.
func FuzzAPIRequests(f *testing.F) {
	for i := range fuzzRoutes {
		for _, s := range []struct{ val, query, body string }{
			{"pumps", "", `{"model": "pumps/m1", "reason": "r", "before": "2026-01-01T00:00:00Z"}`},
			{"0", "p=pumps&since=1&limit=5&up=1&depth=3", `{"id": "x"}`},
			{"..%2F..", "since=-1&limit=99999999999999999999", `{"model": 7`},
			{"GPU-00000000", "p=a%00b", "\xff\xfe{}"},
			{"pumps", "follow=", `{"model": "` + strings.Repeat("a", 70<<10) + `"}`},
			{"m1", "to=pumps/m2", "null"},
			{"", "", "[]"},
		} {
			f.Add(uint8(i), s.val, s.query, []byte(s.body))
		}
	}
	root, err := os.MkdirTemp("", "kf")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { os.RemoveAll(root) })
	paths := config.NewPaths(root, "")
	if err := os.MkdirAll(paths.PipelinesDir, 0o755); err != nil {
		f.Fatal(err)
	}
	spec := "data: {format: csv, label: y, settle: 0s}\ntrain: {image: kiln.local/t:1}\nserve: {image: kiln.local/s:1}\n"
	if err := os.WriteFile(filepath.Join(paths.PipelinesDir, "pumps.yaml"), []byte(spec), 0o644); err != nil {
		f.Fatal(err)
	}
	td := startTestDaemon(f, root, gputest.New(1, gpus.A100_SXM4_40GB))
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", paths.APISocket)
		}}}
	f.Fuzz(func(t *testing.T, route uint8, val, query string, body []byte) {
		r := fuzzRoutes[int(route)%len(fuzzRoutes)]
		q, err := url.ParseQuery(query)
		if err != nil {
			return // not a query a client can send
		}
		q.Del("follow") // a stream never ends: the hostile-caller test covers it
		p := r.path
		for _, name := range []string{"{name}", "{pipeline}", "{gpu}"} {
			p = strings.ReplaceAll(p, name, url.PathEscape(val))
		}
		p = strings.ReplaceAll(p, "{id}", url.PathEscape(val+"1"))
		u := "http://kiln" + p + "?" + q.Encode()
		req, err := http.NewRequest(r.method, u, strings.NewReader(string(body)))
		if err != nil {
			return
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", r.method, u, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 500 && resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("%s %s %q: %d %s; a caller's input is a 4xx", r.method, u, body, resp.StatusCode, b)
		}
		if resp.StatusCode >= 400 {
			var e api.Error
			if json.Unmarshal(b, &e) != nil || e.Error == "" || strings.ContainsAny(e.Error, "\r\n") {
				t.Fatalf("%s %s: %d %q; want a one-line JSON error", r.method, u, resp.StatusCode, b)
			}
		}
		if _, err := td.client.Version(context.Background()); err != nil {
			t.Fatalf("kilnd stopped answering after %s %s: %v", r.method, u, err)
		}
	})
}
