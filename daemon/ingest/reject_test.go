package ingest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kiln-edge/kiln/storage"
)

// TestRejectedWithoutHarm drops each kind of entry that must never be read and checks it is
// quarantined unread with its rule, moved out of the drop folder, and that kilnd neither
// followed, blocked on nor changed anything outside.
func TestRejectedWithoutHarm(t *testing.T) {
	e := newEnv(t, spec(t, "p", "format: csv\nlabel: label\nsettle: 0s\nmax_file_size: 1Ki\n"))
	outside := filepath.Join(e.root, "outside.csv")
	if err := os.WriteFile(outside, []byte(csvRows(5, 0)), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := e.drop("p")
	type drop struct {
		name, rule string
		make       func(path string) error
	}
	drops := []drop{
		{"link.csv", RuleSymlink, func(p string) error { return os.Symlink(outside, p) }},
		{"hard.csv", RuleHardlink, func(p string) error { return os.Link(outside, p) }},
		{"fifo.csv", RuleSpecial, func(p string) error { return unix.Mkfifo(p, 0o644) }},
		{"empty.csv", RuleEmpty, func(p string) error { return os.WriteFile(p, nil, 0o644) }},
		{"big.csv", RuleMaxFileSize, func(p string) error { return os.WriteFile(p, []byte(csvRows(200, 0)), 0o644) }},
		{"bad\xff\xfename.csv", RuleName, func(p string) error { return os.WriteFile(p, []byte(csvRows(5, 0)), 0o644) }},
		{"linkdir", RuleSymlink, func(p string) error { return os.Symlink(e.root, p) }},
	}
	if os.Geteuid() == 0 {
		drops = append(drops, drop{"null-device", RuleSpecial, func(p string) error {
			return unix.Mknod(p, unix.S_IFCHR|0o644, int(unix.Mkdev(1, 3)))
		}})
	}
	for _, d := range drops {
		if err := d.make(filepath.Join(dir, d.name)); err != nil {
			t.Fatalf("make %q: %v", d.name, err)
		}
	}
	ds := e.waitDatasets("p", len(drops), 10*time.Second)
	// Records commit first, then the entries move beside their REASON.json.
	e.waitFor("drop folder emptied", 5*time.Second, func() bool { return len(entries(t, dir)) == 0 })
	byRule := map[string]int{}
	for _, d := range ds {
		if d.State != storage.DatasetQuarantined || len(DataFiles(d)) != 0 {
			t.Errorf("%s: %+v, want quarantined with no content", d.ID, d)
		}
		m := e.meta(d)
		byRule[m.Report.Violations[0].Rule]++
		var r Reason
		b, err := os.ReadFile(filepath.Join(e.quarantine("p"), strings.TrimPrefix(d.ID, "p/"), "REASON.json"))
		if err != nil {
			t.Errorf("%s: %v", d.ID, err)
			continue
		}
		if err := json.Unmarshal(b, &r); err != nil || r.Read || r.Rule == "" {
			t.Errorf("%s REASON.json = %s (%v)", d.ID, b, err)
		}
		if _, err := e.m.Release(t.Context(), d.ID, "uid:0"); err == nil {
			t.Errorf("%s: release of an unread batch succeeded", d.ID)
		}
	}
	want := map[string]int{}
	for _, d := range drops {
		want[d.rule]++
	}
	for r, n := range want {
		if byRule[r] != n {
			t.Errorf("rule %s: %d datasets, want %d (all: %v)", r, byRule[r], n, byRule)
		}
	}
	b, err := os.ReadFile(outside)
	if err != nil || string(b) != csvRows(5, 0) {
		t.Errorf("the link target changed or vanished: %v", err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(outside, &st); err != nil || st.Nlink != 2 {
		t.Errorf("outside file links = %d (%v), want 2 (the hard link kept, moved to quarantine)", st.Nlink, err)
	}
}

func TestRejectReasonNames(t *testing.T) {
	p := spec(t, "p", "format: csv\nlabel: label\n")
	fi, err := os.Stat(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"../escape.csv", "/abs.csv", "a/../../b.csv"} {
		if v := rejectReason(p, name, fi); v == nil || v.Rule != RuleName {
			t.Errorf("rejectReason(%q) = %+v, want rule name", name, v)
		}
	}
}

func TestOverLongLineQuarantines(t *testing.T) {
	e := newEnv(t, spec(t, "p", "format: csv\nlabel: label\nsettle: 0s\n"))
	renameIn(t, e.drop("p"), "long.csv", "x,label\n1,a\n"+strings.Repeat("9", MaxLineLength+1)+",b\n")
	ds := e.waitDatasets("p", 1, 5*time.Second)
	if ds[0].State != storage.DatasetQuarantined || !strings.HasPrefix(ds[0].Reason, "max_line_length") {
		t.Fatalf("dataset = %+v", ds[0])
	}
}

// TestChangedWhileRead deletes or replaces the file between the read and the checks after
// it: the content read is not ingested, an event says why, and a replacement is taken.
func TestChangedWhileRead(t *testing.T) {
	for _, tc := range []struct {
		name    string
		change  func(t *testing.T, path string)
		reason  string
		wantSet int
	}{
		{"deleted", func(t *testing.T, p string) { _ = os.Remove(p) }, "deleted while being read", 0},
		{"replaced", func(t *testing.T, p string) {
			tmp := p + ".new.tmp"
			if err := os.WriteFile(tmp, []byte(csvRows(7, 1000)), 0o644); err != nil {
				t.Error(err)
			}
			if err := os.Rename(tmp, p); err != nil {
				t.Error(err)
			}
		}, "replaced while being read", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, spec(t, "p", "format: csv\nlabel: label\nsettle: 0s\n"))
			fired := false
			testHookAfterCopy = func(path string) {
				if !fired {
					fired = true
					tc.change(t, path)
				}
			}
			t.Cleanup(func() { testHookAfterCopy = nil })
			renameIn(t, e.drop("p"), "a.csv", csvRows(5, 0))
			e.waitFor("rejection event", 5*time.Second, func() bool { return len(e.events("ingest.rejected")) == 1 })
			if got := e.events("ingest.rejected")[0].Details["reason"]; got != tc.reason {
				t.Errorf("reason = %q, want %q", got, tc.reason)
			}
			if tc.wantSet > 0 {
				ds := e.waitDatasets("p", 1, 5*time.Second)
				if ds[0].Rows != 7 {
					t.Errorf("ingested %d rows, want the replacement's 7", ds[0].Rows)
				}
			}
			time.Sleep(100 * time.Millisecond)
			if n := len(e.datasets("p")); n != tc.wantSet {
				t.Errorf("%d datasets, want %d", n, tc.wantSet)
			}
		})
	}
}
