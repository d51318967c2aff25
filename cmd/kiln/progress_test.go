package main

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/daemon/apiclient"
)

var _ apiclient.Expecter = (*progressIO)(nil)

// TestProgressLine: a large transfer redraws one line in place and ends it
// with the final count; a small one, or one with nowhere to draw (not a
// terminal), prints nothing.
func TestProgressLine(t *testing.T) {
	var term bytes.Buffer
	p := newProgress("received", -1, &term, time.Millisecond)
	w := p.Writer(io.Discard)
	p.Expect(40 << 20)
	chunk := make([]byte, 1<<20)
	for range 40 {
		if _, err := w.Write(chunk); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Microsecond)
	}
	time.Sleep(5 * time.Millisecond)
	p.Finish()
	out := term.String()
	if !strings.HasPrefix(out, "\rreceived ") || !strings.HasSuffix(out, "\rreceived 40.0 MiB of 40.0 MiB (100%)\n") || strings.Count(out, "\n") != 1 {
		t.Errorf("progress on a terminal = %q; want \\r-redrawn lines ending in the full count", out)
	}

	var small bytes.Buffer
	p = newProgress("sent", 1<<20, &small, time.Millisecond)
	_, _ = io.Copy(io.Discard, p.Reader(bytes.NewReader(chunk)))
	time.Sleep(5 * time.Millisecond)
	p.Finish()
	if small.Len() != 0 {
		t.Errorf("progress for 1 MiB = %q; want nothing", small.String())
	}

	p = newProgress("sent", 64<<20, nil, time.Millisecond) // not a terminal
	_, _ = io.Copy(io.Discard, p.Reader(io.LimitReader(zeros{}, 64<<20)))
	time.Sleep(5 * time.Millisecond)
	p.Finish() // nowhere to draw: must not write (a nil writer would panic)
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) { clear(b); return len(b), nil }

// TestImageRows: a tag and kilnd's digest pin are one row; two tags of one
// image share it; a pin alone is "(untagged)".
func TestImageRows(t *testing.T) {
	ims := []api.Image{
		{ID: "kiln.local/tabular-trainer:1", Digest: "sha256:aa", State: "tagged"},
		{ID: "sha256:aa", Digest: "sha256:aa", State: "pinned"},
		{ID: "sha256:bb", Digest: "sha256:bb", State: "pinned"},
		{ID: "kiln.local/tabular-server:1", Digest: "sha256:bb", State: "tagged"},
		{ID: "kiln.local/tabular-server:latest", Digest: "sha256:bb", State: "tagged"},
		{ID: "sha256:cc", Digest: "sha256:cc", State: "pinned"},
	}
	var b strings.Builder
	if err := printImages(&b, ims); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n")[1:] {
		names = append(names, strings.Fields(line)[0])
	}
	want := "kiln.local/tabular-trainer:1 kiln.local/tabular-server:1,kiln.local/tabular-server:latest (untagged)"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("image rows %q; want %q\n%s", got, want, b.String())
	}
}
