package daemon

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-edge/kiln/daemon/config"
)

// TestPredictRouteEncodes: `kiln predict`'s body reaches a sagemaker
// pipeline's model as it came (CSV, JSON Lines, an image) and a v2
// pipeline's in its protocol; what cannot be encoded is refused with a
// status naming why, before the model sees it.
func TestPredictRouteEncodes(t *testing.T) {
	dir, err := os.MkdirTemp("", "kpr") // short: a socket path is at most 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	l, err := net.Listen("unix", filepath.Join(dir, "pumps.sock"))
	if err != nil {
		t.Fatal(err)
	}
	var got struct{ path, ctype, body string }
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got.path, got.ctype, got.body = r.URL.Path, r.Header.Get("Content-Type"), string(b)
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("X-Kiln-Model", "pumps/m1")
		_, _ = io.WriteString(w, "answer\n")
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	e := &endpoints{paths: config.Paths{ServeDir: dir}, open: map[string]*openEndpoint{"pumps": {}}}

	const png = "\x89PNG\r\n\x1a\nfake-rest"
	v2path := "/v2/models/pumps/infer"
	tests := []struct {
		name, pipeline, protocol, ctype, body string
		status                                int
		wantPath, wantCtype, wantBody         string // what the model got
		wantErr                               string
	}{
		{"sagemaker csv as it came", "pumps", "sagemaker", "text/csv", "1,2\n", 200, "/invocations", "text/csv", "1,2\n", ""},
		{"sagemaker jsonlines as it came", "pumps", "", "application/jsonlines", `{"a":1}` + "\n", 200, "/invocations", "application/jsonlines", `{"a":1}` + "\n", ""},
		{"sagemaker image as it came", "pumps", "sagemaker", "application/x-image", png, 200, "/invocations", "application/x-image", png, ""},
		{"v2 csv: FP64", "pumps", "v2", "text/csv", "1,2\n3,4\n", 200, v2path, "application/json",
			`{"inputs":[{"name":"input","datatype":"FP64","shape":[2,2],"data":[1,2,3,4]}]}`, ""},
		{"v2 no content type: csv", "pumps", "v2", "", "5\n", 200, v2path, "application/json",
			`{"inputs":[{"name":"input","datatype":"FP64","shape":[1,1],"data":[5]}]}`, ""},
		{"v2 image: BYTES", "pumps", "v2", "image/png", png, 200, v2path, "application/json",
			`{"inputs":[{"name":"input","datatype":"BYTES","shape":[1],"data":["` + base64.StdEncoding.EncodeToString([]byte(png)) + `"]}]}`, ""},
		{"v2 not numbers", "pumps", "v2", "text/csv", "1,hot\n", 400, "", "", "", "pipeline pumps speaks OIP v2: row 1 column 2: v2 sends finite FP64 numbers"},
		{"v2 not an image", "pumps", "v2", "application/x-image", "GIF89a", 400, "", "", "", "pipeline pumps speaks OIP v2: image 1: neither PNG nor JPEG"},
		{"v2 jsonlines", "pumps", "v2", "application/jsonlines", "{}", 415, "", "", "", "send CSV rows in that order"},
		{"v2 other type", "pumps", "v2", "application/xml", "<a/>", 415, "", "", "", `Content-Type "application/xml": want text/csv`},
		{"not serving", "tanks", "sagemaker", "text/csv", "1\n", 404, "", "", "", `no pipeline "tanks" is serving`},
	}
	for _, tt := range tests {
		got.path, got.ctype, got.body = "", "", ""
		req := httptest.NewRequest(http.MethodPost, "/v1/pipelines/"+tt.pipeline+"/predict", strings.NewReader(tt.body))
		if tt.ctype != "" {
			req.Header.Set("Content-Type", tt.ctype)
		}
		rec := httptest.NewRecorder()
		e.predict(rec, req, tt.pipeline, tt.protocol)
		if rec.Code != tt.status {
			t.Errorf("%s: status %d (%s), want %d", tt.name, rec.Code, rec.Body, tt.status)
			continue
		}
		if tt.wantErr != "" {
			var e struct{ Error string }
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || !strings.Contains(e.Error, tt.wantErr) || got.path != "" {
				t.Errorf("%s: answered %q (the model got %q); want an error containing %q, the model nothing", tt.name, rec.Body, got.path, tt.wantErr)
			}
			continue
		}
		if got.path != tt.wantPath || got.ctype != tt.wantCtype || got.body != tt.wantBody {
			t.Errorf("%s: the model got POST %s (%s) %q; want POST %s (%s) %q", tt.name, got.path, got.ctype, got.body, tt.wantPath, tt.wantCtype, tt.wantBody)
		}
		if rec.Body.String() != "answer\n" || rec.Header().Get("X-Kiln-Model") != "pumps/m1" {
			t.Errorf("%s: answered %q, X-Kiln-Model %q; want the model's answer and header", tt.name, rec.Body, rec.Header().Get("X-Kiln-Model"))
		}
	}
}
