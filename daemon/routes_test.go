package daemon

import (
	"net/http/httptest"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kiln-edge/kiln/daemon/api"
)

// TestRouteAccess enumerates every route with the access it needs. A new
// route must be added here too, which forces a decision about who may call it.
func TestRouteAccess(t *testing.T) {
	d := &Daemon{metrics: &metrics{reg: prometheus.NewRegistry()}}
	got := map[string]api.Access{}
	for _, r := range d.routes() {
		got[r.Method+" "+r.Path] = r.Access
	}
	want := map[string]api.Access{
		"GET /v1/status":                              api.Read,
		"GET /v1/version":                             api.Read,
		"GET /v1/doctor":                              api.Read,
		"GET /v1/pipelines":                           api.Read,
		"GET /v1/pipelines/{name}":                    api.Read,
		"POST /v1/pipelines/reload":                   api.Write,
		"GET /v1/gpu":                                 api.Read,
		"POST /v1/gpu/{gpu}/cordon":                   api.Write,
		"POST /v1/gpu/{gpu}/uncordon":                 api.Write,
		"GET /v1/events":                              api.Read,
		"GET /v1/backup":                              api.Write,
		"POST /v1/gc":                                 api.Write,
		"GET /v1/lineage/{pipeline}/{id}":             api.Read,
		"GET /v1/models":                              api.Read,
		"GET /v1/models/{pipeline}/{id}":              api.Read,
		"GET /v1/runs":                                api.Read,
		"GET /v1/runs/{pipeline}/{id}":                api.Read,
		"GET /v1/runs/{pipeline}/{id}/logs":           api.Read,
		"POST /v1/models/{pipeline}/{id}/promote":     api.Write,
		"POST /v1/pipelines/{name}/pin":               api.Write,
		"POST /v1/pipelines/{name}/predict":           api.Read,
		"POST /v1/pipelines/{name}/predictions/purge": api.Write,
		"GET /v1/predictions/backup":                  api.Write,
		"GET /v1/pipelines/{name}/accuracy":           api.Read,
		"POST /v1/pipelines/{name}/feedback":          api.Write,
		"POST /v1/pipelines/{name}/rollback":          api.Write,
		"POST /v1/pipelines/{name}/train":             api.Write,
		"POST /v1/pipelines/{name}/unpin":             api.Write,
		"POST /v1/runs/{pipeline}/{id}/cancel":        api.Write,
		"GET /metrics":                                api.Read,
		"GET /v1/datasets":                            api.Read,
		"GET /v1/datasets/{pipeline}/{id}":            api.Read,
		"POST /v1/datasets/{pipeline}/{id}/release":   api.Write,
		"GET /v1/images":                              api.Read,
		"POST /v1/images/import":                      api.Write,
		"GET /ui/":                                    api.Read,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("routes (-want +got):\n%s", diff)
	}

	// Write routes some of whose requests change nothing, and so are reads.
	readIf := map[string]bool{}
	for _, r := range d.routes() {
		if r.ReadIf != nil {
			key := r.Method + " " + r.Path
			readIf[key] = true
			if r.ReadIf(httptest.NewRequest(r.Method, r.Path, nil)) {
				t.Errorf("%s without a dry run counts as a read", key)
			}
		}
	}
	if diff := cmp.Diff(map[string]bool{"POST /v1/gc": true}, readIf); diff != "" {
		t.Errorf("routes with reads among their writes (-want +got):\n%s", diff)
	}
	if !gcDryRun(httptest.NewRequest("POST", "/v1/gc?dry_run=1&images=1", nil)) {
		t.Error("gc?dry_run=1 is not a read")
	}
}
