package contract

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
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
