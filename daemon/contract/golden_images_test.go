package contract_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kiln-edge/kiln/daemon/contract"
	imagemodel "github.com/kiln-edge/kiln/examples/images/model"
)

// TestGoldenImages holds Encode to examples/images/testdata/golden.json,
// the image example server's golden file. For every successful image case
// the golden request is decoded into images, encoded again, and must be the
// golden request byte for byte (a v2 request less the "id" kiln does not
// send); sent through the real example server, the answer must be the
// golden answer byte for byte, and PredictInputs must return its
// predictions. Then all the sagemaker cases' images go through
// PredictInputs at once (one request an image, several in flight) and come
// back in order.
func TestGoldenImages(t *testing.T) {
	raw, err := os.ReadFile("../../examples/images/testdata/golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var golden struct {
		Pipeline string            `json:"pipeline"`
		Model    *imagemodel.Model `json:"model"`
		Cases    []struct {
			Name, Path, Request, Response string
			RequestBase64                 string `json:"request_base64"`
			ContentType                   string `json:"content_type"`
			Status                        int
		} `json:"cases"`
	}
	if err := json.Unmarshal(raw, &golden); err != nil {
		t.Fatal(err)
	}
	if err := golden.Model.Check(); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "kgi") // a short path: a socket's is at most 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: imagemodel.NewHandler(golden.Model, golden.Pipeline)}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	dial := func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) }}}
	t.Cleanup(hc.CloseIdleConnections)

	var allImages [][]byte
	var allPreds []string
	checked := map[string]int{}
	for _, c := range golden.Cases {
		var protocol string
		switch c.Path {
		case "/invocations":
			protocol = contract.ProtocolSageMaker
		case contract.V2InferPath(golden.Pipeline):
			protocol = contract.ProtocolV2
		default:
			continue
		}
		if c.Status != http.StatusOK {
			continue
		}
		body := []byte(c.Request)
		if c.RequestBase64 != "" {
			if body, err = base64.StdEncoding.DecodeString(c.RequestBase64); err != nil {
				t.Fatalf("%s: request_base64: %v", c.Name, err)
			}
		}
		t.Run(c.Name, func(t *testing.T) {
			in, err := contract.DecodeInputs(protocol, c.ContentType, body)
			if err != nil || in.Format != contract.FormatImages || in.Len() == 0 {
				t.Fatalf("DecodeInputs(golden request) = %d %s, %v; want images", in.Len(), in.Format, err)
			}
			if n := contract.CountRows(c.ContentType, body); n != in.Len() {
				t.Errorf("CountRows(golden request) = %d, DecodeInputs found %d images", n, in.Len())
			}
			if rows, err := contract.DecodeRequest(protocol, c.ContentType, body); !errors.Is(err, contract.ErrNotTabular) {
				t.Errorf("DecodeRequest(golden request) = %d rows, %v; want ErrNotTabular", len(rows), err)
			}
			want, err := contract.ParseAnswer(protocol, []byte(c.Response))
			if err != nil || len(want) != in.Len() {
				t.Fatalf("ParseAnswer(golden answer) = %q, %v; want %d predictions", want, err, in.Len())
			}

			reqs, err := contract.Encode(protocol, golden.Pipeline, in)
			if err != nil || len(reqs) != 1 {
				t.Fatalf("Encode = %d requests, %v; want one", len(reqs), err)
			}
			req := reqs[0]
			wantBody, wantAnswer := string(body), c.Response
			if protocol == contract.ProtocolV2 {
				// The server echoes a request's "id"; kiln sends none.
				wantBody = strings.Replace(wantBody, `"id":"req-1",`, "", 1)
				wantAnswer = strings.Replace(wantAnswer, `"id":"req-1",`, "", 1)
			}
			if req.Path != c.Path || req.ContentType != c.ContentType || string(req.Body) != wantBody {
				t.Errorf("Encode = POST %s (%s) %.80q...; golden POST %s (%s) %.80q...", req.Path, req.ContentType, req.Body, c.Path, c.ContentType, wantBody)
			}
			if answer := post(t, hc, req); string(answer) != wantAnswer {
				t.Errorf("the example server answered kiln's request with\n%q\nwant the golden\n%q", answer, wantAnswer)
			}
			got, err := contract.PredictInputs(context.Background(), dial, protocol, golden.Pipeline, in)
			if err != nil || !slices.Equal(got, want) {
				t.Errorf("PredictInputs(%s) = %q, %v; want %q", protocol, got, err, want)
			}
			if protocol == contract.ProtocolSageMaker {
				allImages, allPreds = append(allImages, in.Images...), append(allPreds, want...)
			}
			checked[protocol]++
		})
	}
	if checked[contract.ProtocolSageMaker] < 2 || checked[contract.ProtocolV2] < 2 {
		t.Fatalf("checked %v golden cases; the golden file changed shape", checked)
	}
	// Every sagemaker image at once, twice over: more than ImageConcurrency
	// requests, answered in order.
	allImages, allPreds = append(allImages, allImages...), append(allPreds, allPreds...)
	got, err := contract.PredictInputs(context.Background(), dial, contract.ProtocolSageMaker, golden.Pipeline,
		contract.Inputs{Format: contract.FormatImages, Images: allImages})
	if err != nil || !slices.Equal(got, allPreds) {
		t.Errorf("PredictInputs(all %d sagemaker images) = %q, %v; want %q", len(allImages), got, err, allPreds)
	}
}
