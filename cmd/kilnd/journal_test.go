package main

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/daemon/api"
)

// TestJournalTellsWhatHappened: kilnd's log reads like `kiln events`. Every
// event is one line naming its pipeline, run, model or dataset and the
// reason, in the message and as fields. kilnd runs here without journald, so
// the lines come from the stderr fallback, whose keys are the journal's
// fields lower-cased (systemd/journal_test.go pins that mapping under a
// journald socket).
func TestJournalTellsWhatHappened(t *testing.T) {
	spec := strings.Replace(cancerSpec, "settle: 0s}", "settle: 0s, validate: {labels: [benign, malignant]}}", 1)
	k, root := startLoopData(t, "kiln-test-journal", spec) // cancer/d1: the first 300 rows
	// Play systemd reading its notify socket: unread, it fills, and each
	// STATUS then waits out sd_notify's send timeout.
	_ = k.notify.SetReadDeadline(time.Time{})
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, err := k.notify.Read(buf); err != nil {
				return // closed when kilnd has exited
			}
		}
	}()
	data := cancerCSV(t)
	lines := strings.SplitAfter(string(data), "\n")

	// A second pipeline whose trainer refuses its hyperparameters: its run
	// fails with the trainer's own reason.
	broken := strings.Replace(strings.Replace(cancerSpec, "name: cancer", "name: broken", 1),
		"train:\n", "train:\n  hyperparameters: {epochs: \"many\"}\n", 1)
	writeFile(t, filepath.Join(root, "etc/kiln/pipelines/broken.yaml"), broken)
	if _, stderr, err := k.kiln(nil, "pipelines", "reload"); err != nil {
		t.Fatalf("reload: %v: %s", err, stderr)
	}
	brokenDrop := filepath.Join(root, "var/lib/kiln/drop/broken")
	waitFor(t, "the broken drop folder", func() bool { _, err := os.Stat(brokenDrop); return err == nil })
	writeFile(t, filepath.Join(brokenDrop, ".b.part"), strings.Join(lines[:101], ""))
	if err := os.Rename(filepath.Join(brokenDrop, ".b.part"), filepath.Join(brokenDrop, "b.csv")); err != nil {
		t.Fatal(err)
	}

	waitLong(t, 3*time.Minute, "cancer/m1 live", func() bool { return modelsOf(t, k)["cancer/m1"].State == "live" })
	dropData(t, root, "again.csv", strings.Join(lines[:301], "")) // the same content as d1
	bad := slices.Clone(lines[:21])
	bad[1] = bad[1][:strings.LastIndexByte(bad[1], ',')+1] + "maybe\n"
	dropData(t, root, "bad.csv", strings.Join(bad, "")) // labels line 2
	dropData(t, root, "more.csv", lines[0]+strings.Join(lines[301:], ""))
	var m2 api.Model
	waitLong(t, 3*time.Minute, "cancer/m2 evaluated", func() bool {
		m2 = modelsOf(t, k)["cancer/m2"]
		return m2.State == "live" || m2.State == "rejected"
	})
	rollback := []string{"rollback", "cancer"} // m2 live: back to the standby m1
	if m2.State == "rejected" {
		rollback = append(rollback, "--to", "cancer/m2")
	}
	if _, stderr, err := k.kiln(nil, rollback...); err != nil {
		t.Fatalf("kiln %s: %v: %s", strings.Join(rollback, " "), err, stderr)
	}
	waitLong(t, time.Minute, "broken/r1 failed", func() bool {
		return findEvent(eventsOf(t, k), "run.failed") != nil
	})
	writeFile(t, filepath.Join(root, "etc/kiln/pipelines/fans.yaml"), "name: fans\ndata: {format: csvv, label: x}\ntrain: {image: a}\nserve: {image: b}\n")
	if _, _, err := k.kiln(nil, "pipelines", "reload"); err == nil {
		t.Fatal("reload of a bad spec succeeded")
	}
	events := eventsOf(t, k)
	if err := k.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := k.wait(); err != nil {
		t.Fatalf("kilnd exit: %v", err)
	}

	// One line per event, each exactly once; the follow began at start, so
	// every event of this test is there.
	logged := map[string]map[string]string{} // seq -> line
	for _, l := range strings.Split(k.stderr.String(), "\n") {
		f := textLogFields(l)
		if f["event"] == "" {
			continue
		}
		if logged[f["seq"]] != nil {
			t.Errorf("event %s logged twice:\n%s", f["seq"], l)
		}
		logged[f["seq"]] = f
	}
	for _, e := range events {
		f := logged[strconv.FormatUint(e.Seq, 10)]
		if f == nil || f["event"] != e.Kind {
			t.Errorf("event %d %s %v not in the log (got %v)", e.Seq, e.Kind, e.Refs, f)
			continue
		}
		if e.Pipeline != "" && f["pipeline"] != e.Pipeline {
			t.Errorf("event %d %s logged with pipeline=%q, want %q", e.Seq, e.Kind, f["pipeline"], e.Pipeline)
		}
	}

	find := func(kind, key, value string) map[string]string {
		for _, f := range logged {
			if f["event"] == kind && (key == "" || f[key] == value) {
				return f
			}
		}
		t.Errorf("no %s line with %s=%s", kind, key, value)
		return map[string]string{}
	}
	check := func(f map[string]string, msgPrefix string, fields map[string]string) {
		t.Helper()
		if !strings.HasPrefix(f["msg"], msgPrefix) {
			t.Errorf("%s: msg %q, want it to start %q", f["event"], f["msg"], msgPrefix)
		}
		for k, v := range fields {
			if !strings.Contains(f[k], v) {
				t.Errorf("%s %q: %s=%q, want it to contain %q", f["event"], f["msg"], k, f[k], v)
			}
		}
	}
	check(find("dataset.accepted", "dataset", "cancer/d1"), "dataset cancer/d1 accepted", map[string]string{"pipeline": "cancer"})
	q := find("dataset.quarantined", "pipeline", "cancer")
	check(q, "dataset "+q["dataset"]+" quarantined: labels in bad.csv line 2", map[string]string{"reason": "maybe", "dataset": "cancer/d"})
	check(find("dataset.duplicate", "pipeline", "cancer"), "duplicate batch "+filepath.Join(root, "var/lib/kiln/drop/cancer/again.csv")+
		" not ingested: same content as dataset cancer/d1", map[string]string{"dataset": "cancer/d1"})
	check(find("run.started", "run", "cancer/r1"), "run cancer/r1 started", map[string]string{"pipeline": "cancer"})
	check(find("run.failed", "run", "broken/r1"), "run broken/r1 failed: ", map[string]string{"pipeline": "broken", "reason": "hyperparameter epochs"})
	check(find("model.promoted", "model", "cancer/m1"), "model cancer/m1 promoted: accuracy ", map[string]string{"pipeline": "cancer", "reason": "gate"})
	check(find("model.rolled_back_to", "pipeline", "cancer"), "pipeline cancer rolled back to model cancer/m", map[string]string{"model": "cancer/m"})
	check(find("pipelines.reload_rejected", "", ""), "pipelines reload rejected (api) by uid:0: "+filepath.Join(root, "etc/kiln/pipelines/fans.yaml")+":2:",
		map[string]string{"reason": "data.format"})
	for _, f := range []map[string]string{find("run.failed", "run", "broken/r1"), q, find("model.rolled_back_to", "pipeline", "cancer")} {
		if f["level"] != "WARN" {
			t.Errorf("%s logged at %s, want WARN", f["event"], f["level"])
		}
	}
}

// textLogFields splits one slog text line into its keys and values.
func textLogFields(line string) map[string]string {
	out := map[string]string{}
	for line = strings.TrimSpace(line); line != ""; line = strings.TrimLeft(line, " ") {
		k, rest, ok := strings.Cut(line, "=")
		if !ok {
			break
		}
		var v string
		if strings.HasPrefix(rest, `"`) {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				break
			}
			v, _ = strconv.Unquote(q)
			rest = rest[len(q):]
		} else {
			v, rest, _ = strings.Cut(rest, " ")
		}
		out[k] = v
		line = rest
	}
	return out
}
