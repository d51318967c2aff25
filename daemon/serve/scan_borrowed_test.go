package serve

import (
	"bytes"
	"testing"
	"time"
)

// TestScanBorrowedSeesWhatScanSees: the copy-free scan gives every record
// Scan gives, field for field, while fn runs.
func TestScanBorrowedSeesWhatScanSees(t *testing.T) {
	dir := shortDir(t)
	te := startEndpoint(t, Options{PredLogDir: dir, Pipeline: "iris"})
	te.Flip(startBackend(t, "iris/m1"))
	for i := range 50 {
		body := append(bytes.Repeat([]byte{byte('a' + i%26)}, 10+i), '\n')
		res, err := te.client.Post(te.url+"/invocations", "text/csv", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
	}
	if err := te.FlushLog(t.Context()); err != nil {
		t.Fatal(err)
	}
	r, err := OpenLogReader(dir, "iris")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var copied []Record
	if err := r.Scan(time.Time{}, func(rec Record) error { copied = append(copied, rec); return nil }); err != nil {
		t.Fatal(err)
	}
	i := 0
	err = r.ScanBorrowed(time.Time{}, func(rec Record) error {
		want := copied[i]
		if rec.ID != want.ID || rec.Model != want.Model || !bytes.Equal(rec.Input, want.Input) ||
			!bytes.Equal(rec.Output, want.Output) || rec.Status != want.Status || !rec.Time.Equal(want.Time) {
			t.Errorf("record %d: borrowed %+v, copied %+v", i, rec, want)
		}
		i++
		return nil
	})
	if err != nil || i != len(copied) || i != 50 {
		t.Fatalf("borrowed scan saw %d records (%v), Scan %d, want 50", i, err, len(copied))
	}
}
