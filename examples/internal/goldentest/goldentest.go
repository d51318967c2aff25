// Package goldentest owns the harness the example servers' golden tests
// share: the case format of examples/*/testdata/golden.json (one request
// and its exact answer), replaying every case against a handler and
// comparing status, Content-Type and body byte for byte, and rewriting the
// answers when a test runs with -update. What a golden file's model is, and
// which cases it must hold, stay with each example's test.
package goldentest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Case is one request and the exact answer. A binary request body (an
// image) is RequestBase64; a text one is Request.
type Case struct {
	Name                string `json:"name"`
	Method              string `json:"method"`
	Path                string `json:"path"`
	ContentType         string `json:"content_type,omitempty"`
	Request             string `json:"request,omitempty"`
	RequestBase64       string `json:"request_base64,omitempty"`
	Status              int    `json:"status"`
	ResponseContentType string `json:"response_content_type"`
	Response            string `json:"response"`
}

// Body is the request's bytes.
func (c Case) Body() ([]byte, error) {
	if c.RequestBase64 != "" {
		return base64.StdEncoding.DecodeString(c.RequestBase64)
	}
	return []byte(c.Request), nil
}

// File is one golden.json: the model the server loads (M is the example's
// model type), the pipeline whose name the server answers v2 requests
// under, and the cases.
type File[M any] struct {
	Comment  string `json:"comment"`
	Pipeline string `json:"pipeline"`
	Model    M      `json:"model"`
	Cases    []Case `json:"cases"`
}

// Read decodes the golden file at path.
func Read[M any](t testing.TB, path string) File[M] {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var g File[M]
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return g
}

// Replay sends every case of g (read from path) to h over real HTTP and
// fails t where the status, Content-Type or body differs from the case, or
// where an error answer spans more than one line. With update it checks
// nothing and rewrites path with h's answers instead.
func Replay[M any](t *testing.T, path string, g File[M], h http.Handler, update bool) {
	t.Helper()
	check(t, h, g.Cases, update)
	if update {
		write(t, path, g)
	}
}

// check is Replay's loop; with update it records each answer into cases.
func check(t *testing.T, h http.Handler, cases []Case, update bool) {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	for i, c := range cases {
		body, err := c.Body()
		if err != nil {
			t.Fatalf("%s: request_base64: %v", c.Name, err)
		}
		req, err := http.NewRequest(c.Method, srv.URL+c.Path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if c.ContentType != "" {
			req.Header.Set("Content-Type", c.ContentType)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		ct := resp.Header.Get("Content-Type")
		if update {
			cases[i].Status, cases[i].ResponseContentType, cases[i].Response = resp.StatusCode, ct, string(got)
			continue
		}
		if resp.StatusCode != c.Status || ct != c.ResponseContentType {
			t.Errorf("%s: status %d, Content-Type %q; want %d, %q", c.Name, resp.StatusCode, ct, c.Status, c.ResponseContentType)
		}
		if diff := cmp.Diff(c.Response, string(got)); diff != "" {
			t.Errorf("%s: response (-want +got):\n%s", c.Name, diff)
		}
		if resp.StatusCode >= 400 && strings.Count(strings.TrimSuffix(string(got), "\n"), "\n") > 0 {
			t.Errorf("%s: error answer spans lines: %q", c.Name, got)
		}
	}
}

// write saves g to path as indented JSON and a newline: the -update path.
func write(t testing.TB, path string, g any) {
	t.Helper()
	out, err := json.MarshalIndent(g, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(out, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}
