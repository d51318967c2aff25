package contract

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// serveUnix serves h on a unix socket in a temporary folder and returns a
// DialFunc to it, as a serving container's socket is reached.
func serveUnix(t *testing.T, h http.Handler) DialFunc {
	t.Helper()
	dir, err := os.MkdirTemp("", "kc") // t.TempDir can exceed a socket path's 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}
}

// echoServer answers each sagemaker row with its first value, and records
// the row count of every request it gets.
type echoServer struct {
	mu      sync.Mutex
	batches []int
	// wrongAt, when > 0, makes that request (1-based) answer one
	// prediction short.
	wrongAt int
}

func (s *echoServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rows, err := DecodeRequest(ProtocolSageMaker, r.Header.Get("Content-Type"), body)
	if err != nil || r.URL.Path != "/invocations" {
		http.Error(w, fmt.Sprintf("bad request to %s: %v\nsecond line", r.URL.Path, err), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.batches = append(s.batches, len(rows))
	n := len(s.batches)
	s.mu.Unlock()
	if n == s.wrongAt {
		rows = rows[1:]
	}
	for _, row := range rows {
		fmt.Fprintln(w, row[0])
	}
}

func TestPredictBatches(t *testing.T) {
	srv := &echoServer{}
	dial := serveUnix(t, srv)
	rows := make([][]string, 2*PredictBatch+1)
	for i := range rows {
		rows[i] = []string{strconv.Itoa(i), "x"}
	}
	got, err := Predict(context.Background(), dial, ProtocolSageMaker, "p", rows)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(rows) {
		t.Fatalf("got %d predictions for %d rows", len(got), len(rows))
	}
	for i, p := range got {
		if p != strconv.Itoa(i) {
			t.Fatalf("prediction %d = %q: out of order", i, p)
		}
	}
	if fmt.Sprint(srv.batches) != fmt.Sprint([]int{PredictBatch, PredictBatch, 1}) {
		t.Errorf("requests held %v rows, want %d, %d, 1", srv.batches, PredictBatch, PredictBatch)
	}
	if got, err := Predict(context.Background(), dial, ProtocolSageMaker, "p", nil); err != nil || len(got) != 0 {
		t.Errorf("Predict(no rows) = %v, %v; want nothing and no request", got, err)
	}
}

func TestPredictErrorsNameTheRows(t *testing.T) {
	rows := make([][]string, PredictBatch+10)
	for i := range rows {
		rows[i] = []string{"1"}
	}
	dial := serveUnix(t, &echoServer{wrongAt: 2})
	_, err := Predict(context.Background(), dial, ProtocolSageMaker, "p", rows)
	if want := fmt.Sprintf("rows %d-%d: answered 9 predictions for 10 rows", PredictBatch+1, PredictBatch+10); err == nil || err.Error() != want {
		t.Errorf("short answer: Predict = %v, want %q", err, want)
	}

	// A v2 request to a server that only speaks sagemaker: the status and
	// the first line of its answer.
	dial = serveUnix(t, &echoServer{})
	_, err = Predict(context.Background(), dial, ProtocolV2, "pumps", [][]string{{"1"}, {"2"}})
	if err == nil || !strings.HasPrefix(err.Error(), "rows 1-2: POST /v2/models/pumps/infer: 400 Bad Request: bad request to /v2/models/pumps/infer") || strings.Contains(err.Error(), "second line") {
		t.Errorf("refused request: Predict = %v", err)
	}

	_, err = Predict(context.Background(), dial, ProtocolV2, "pumps", [][]string{{"1"}, {"hot"}})
	if err == nil || err.Error() != `rows 1-2: row 2 column 1: v2 sends finite FP64 numbers, got "hot"` {
		t.Errorf("unencodable rows: Predict = %v", err)
	}

	dead := func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", filepath.Join(t.TempDir(), "none.sock"))
	}
	if _, err = Predict(context.Background(), dead, ProtocolSageMaker, "p", rows[:1]); err == nil || !strings.HasPrefix(err.Error(), "rows 1-1: ") {
		t.Errorf("no server: Predict = %v", err)
	}
}

// imageServer answers every image with "<kind> <bytes>" (kind png or
// jpeg, by magic bytes) in either protocol, counting requests and the most
// in flight at once. A sagemaker request whose image has failAt bytes is
// refused.
type imageServer struct {
	mu                 sync.Mutex
	requests, inFlight int
	maxInFlight        int
	batches            []int
	failAt             int
}

func (s *imageServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests++
	s.inFlight++
	s.maxInFlight = max(s.maxInFlight, s.inFlight)
	s.mu.Unlock()
	defer func() { s.mu.Lock(); s.inFlight--; s.mu.Unlock() }()
	time.Sleep(5 * time.Millisecond) // long enough for requests to overlap
	body, _ := io.ReadAll(r.Body)
	protocol := ProtocolSageMaker
	if r.URL.Path != "/invocations" {
		protocol = ProtocolV2
	}
	in, err := DecodeInputs(protocol, r.Header.Get("Content-Type"), body)
	if err != nil || in.Format != FormatImages {
		http.Error(w, fmt.Sprintf("want images: %v (%s)", err, in.Format), http.StatusBadRequest)
		return
	}
	var preds []string
	for _, img := range in.Images {
		if len(img) == s.failAt {
			http.Error(w, "cannot decode this one", http.StatusUnprocessableEntity)
			return
		}
		kind := "jpeg"
		if bytes.HasPrefix(img, pngMagic) {
			kind = "png"
		}
		preds = append(preds, fmt.Sprintf("%s %d", kind, len(img)))
	}
	s.mu.Lock()
	s.batches = append(s.batches, len(in.Images))
	s.mu.Unlock()
	if protocol == ProtocolSageMaker {
		fmt.Fprintln(w, preds[0])
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"outputs": []any{map[string]any{"name": "label", "datatype": "BYTES", "shape": []int{len(preds)}, "data": preds}}})
}

func TestPredictInputsImages(t *testing.T) {
	var imgs [][]byte
	var want []string
	for i := range 11 {
		kind := []string{"png", "jpeg"}[i%2]
		img := testImage(t, kind, 3+i, 2, uint8(i))
		imgs = append(imgs, img)
		want = append(want, fmt.Sprintf("%s %d", kind, len(img)))
	}
	in := Inputs{Format: FormatImages, Images: imgs}

	srv := &imageServer{}
	got, err := PredictInputs(context.Background(), serveUnix(t, srv), ProtocolSageMaker, "cats", in)
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("sagemaker: PredictInputs = %q, %v; want %q", got, err, want)
	}
	if srv.requests != len(imgs) || srv.maxInFlight < 2 || srv.maxInFlight > ImageConcurrency {
		t.Errorf("sagemaker: %d requests, at most %d in flight; want %d, 2..%d", srv.requests, srv.maxInFlight, len(imgs), ImageConcurrency)
	}

	srv = &imageServer{}
	got, err = PredictInputs(context.Background(), serveUnix(t, srv), ProtocolV2, "cats", in)
	if err != nil || !slices.Equal(got, want) || srv.requests != 1 {
		t.Fatalf("v2: PredictInputs = %q, %v in %d requests; want %q in one", got, err, srv.requests, want)
	}

	// v2 batches: PredictBatch images, or fewer when they pass
	// imageBatchBytes (but always one).
	big := append(slices.Clone(imgs[0]), make([]byte, imageBatchBytes/2)...)
	huge := append(slices.Clone(imgs[1]), make([]byte, imageBatchBytes)...)
	many := make([][]byte, 0, PredictBatch+3)
	for range PredictBatch + 1 {
		many = append(many, imgs[0])
	}
	many = append(many, big, big, huge, imgs[1])
	srv = &imageServer{}
	got, err = PredictInputs(context.Background(), serveUnix(t, srv), ProtocolV2, "cats", Inputs{Format: FormatImages, Images: many})
	if err != nil || len(got) != len(many) || got[len(got)-1] != want[1] {
		t.Fatalf("v2 batches: PredictInputs = %d predictions, %v", len(got), err)
	}
	// 500 | small, big | big | huge (over the bound alone) | small
	if fmt.Sprint(srv.batches) != fmt.Sprint([]int{PredictBatch, 2, 1, 1, 1}) {
		t.Errorf("v2 batches held %v images, want [%d 2 1 1 1]", srv.batches, PredictBatch)
	}
}

func TestPredictInputsErrorsNameTheImage(t *testing.T) {
	imgs := make([][]byte, 40)
	for i := range imgs {
		// Trailing bytes make every length distinct: failAt picks by length.
		imgs[i] = append(testImage(t, "png", 1, 1, 0), make([]byte, 10*i)...)
	}
	srv := &imageServer{failAt: len(imgs[6])}
	_, err := PredictInputs(context.Background(), serveUnix(t, srv), ProtocolSageMaker, "cats", Inputs{Format: FormatImages, Images: imgs})
	if want := "image 7: POST /invocations: 422 Unprocessable Entity: cannot decode this one"; err == nil || err.Error() != want {
		t.Errorf("refused image: PredictInputs = %v, want %q", err, want)
	}
	if srv.requests > 7+ImageConcurrency { // the failure stops the rest
		t.Errorf("%d requests for %d images failing at the 7th", srv.requests, len(imgs))
	}
	_, err = PredictInputs(context.Background(), serveUnix(t, srv), ProtocolV2, "cats", Inputs{Format: FormatImages, Images: imgs})
	if err == nil || !strings.HasPrefix(err.Error(), "images 1-40: POST /v2/models/cats/infer: 422 ") {
		t.Errorf("refused v2 batch: PredictInputs = %v", err)
	}
	_, err = PredictInputs(context.Background(), serveUnix(t, srv), ProtocolSageMaker, "cats", Inputs{Format: FormatImages, Images: [][]byte{imgs[0], []byte("BM bitmap")}})
	if err == nil || !strings.HasPrefix(err.Error(), "image 2: neither PNG nor JPEG") {
		t.Errorf("a bitmap: PredictInputs = %v", err)
	}
	// A server answering two lines for one image.
	two := serveUnix(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "a\nb\n") }))
	_, err = PredictInputs(context.Background(), two, ProtocolSageMaker, "cats", Inputs{Format: FormatImages, Images: imgs[:1]})
	if err == nil || err.Error() != "image 1: answered 2 predictions for 1 image" {
		t.Errorf("two answers for one image: PredictInputs = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err = PredictInputs(ctx, serveUnix(t, &imageServer{}), ProtocolSageMaker, "cats", Inputs{Format: FormatImages, Images: imgs}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: PredictInputs = %v, want context.Canceled", err)
	}
}

// TestPredictInputsJSONLines goes through the example's kind of server: it
// reads the JSON Lines keys by name.
func TestPredictInputsJSONLines(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		in, err := DecodeInputs(ProtocolSageMaker, r.Header.Get("Content-Type"), body)
		if err != nil || in.Format != FormatJSONL {
			http.Error(w, fmt.Sprint("want jsonlines: ", err), http.StatusBadRequest)
			return
		}
		t := slices.Index(in.Columns, "temp")
		for _, row := range in.Rows {
			fmt.Fprintln(w, "hot="+row[t])
		}
	})
	rows := make([][]string, PredictBatch+2)
	for i := range rows {
		rows[i] = []string{strconv.Itoa(i), "x"}
	}
	got, err := PredictInputs(context.Background(), serveUnix(t, h), ProtocolSageMaker, "p",
		Inputs{Format: FormatJSONL, Columns: []string{"temp", "state"}, Rows: rows})
	if err != nil || len(got) != len(rows) || got[0] != "hot=0" || got[PredictBatch+1] != fmt.Sprintf("hot=%d", PredictBatch+1) {
		t.Fatalf("PredictInputs(jsonl) = %d predictions, %v", len(got), err)
	}
	_, err = PredictInputs(context.Background(), serveUnix(t, h), ProtocolSageMaker, "p", Inputs{Format: FormatJSONL, Rows: rows[:1]})
	if err == nil || !strings.HasPrefix(err.Error(), "rows 1-1: jsonl inputs need the feature columns' names") {
		t.Errorf("no columns: PredictInputs = %v", err)
	}
	if _, err = PredictInputs(context.Background(), serveUnix(t, h), ProtocolSageMaker, "p", Inputs{Format: "xml"}); err == nil {
		t.Error("unknown format: no error")
	}
}
