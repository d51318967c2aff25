package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/storage"
	"github.com/kiln-edge/kiln/storage/storagetest"
)

func TestEventLine(t *testing.T) {
	tests := []struct {
		name  string
		e     storage.Event
		level slog.Level
		msg   string
		attrs map[string]string // besides event, seq and actor
	}{{
		name: "run failed",
		e: storage.Event{Kind: "run.failed", Actor: "kilnd", Pipeline: "cancer", Refs: []string{"cancer/r3"},
			Details: map[string]string{"reason": "OOM at 512Mi"}},
		level: slog.LevelWarn, msg: "run cancer/r3 failed: OOM at 512Mi",
		attrs: map[string]string{"pipeline": "cancer", "run": "cancer/r3", "reason": "OOM at 512Mi"},
	}, {
		name: "run started",
		e: storage.Event{Kind: "run.started", Actor: "kilnd", Pipeline: "cancer", Refs: []string{"cancer/r3"},
			Details: map[string]string{"image": "sha256:ab", "container": "kiln-cancer-r3"}},
		level: slog.LevelInfo, msg: "run cancer/r3 started (container=kiln-cancer-r3 image=sha256:ab)",
		attrs: map[string]string{"pipeline": "cancer", "run": "cancer/r3"},
	}, {
		name: "quarantined",
		e: storage.Event{Kind: "dataset.quarantined", Actor: "kilnd", Pipeline: "cancer", Refs: []string{"cancer/d7"},
			Details: map[string]string{"rule": "labels", "file": `"a.csv"`, "line": "2", "observed": `"maybe"`,
				"allowed": "benign, malignant", "kind": "data"}},
		level: slog.LevelWarn, msg: `dataset cancer/d7 quarantined: labels in "a.csv" line 2: observed "maybe", allowed benign, malignant (kind=data)`,
		attrs: map[string]string{"pipeline": "cancer", "dataset": "cancer/d7",
			"reason": `labels in "a.csv" line 2: observed "maybe", allowed benign, malignant`},
	}, {
		name: "duplicate",
		e: storage.Event{Kind: "dataset.duplicate", Actor: "kilnd", Pipeline: "cancer", Refs: []string{"cancer/d1"},
			Details: map[string]string{"path": `"again.csv"`, "kind": "data"}},
		level: slog.LevelInfo, msg: `duplicate batch "again.csv" not ingested: same content as dataset cancer/d1 (kind=data)`,
		attrs: map[string]string{"pipeline": "cancer", "dataset": "cancer/d1"},
	}, {
		name: "promoted",
		e: storage.Event{Kind: "model.promoted", Actor: "uid:0", Pipeline: "cancer", Refs: []string{"cancer/m2", "cancer/e2", "cancer/m1"},
			Details: map[string]string{"from": "cancer/m1", "deployment": "cancer/e2", "accuracy": "0.96",
				"gate": "accuracy 0.96 beats the live model's 0.95", "reason": "300 new rows"}},
		level: slog.LevelInfo, msg: `model cancer/m2 promoted by uid:0: accuracy 0.96 beats the live model's 0.95 (accuracy=0.96 deployment=cancer/e2 from=cancer/m1 reason="300 new rows")`,
		attrs: map[string]string{"pipeline": "cancer", "model": "cancer/m2", "deployment": "cancer/e2", "reason": "accuracy 0.96 beats the live model's 0.95"},
	}, {
		name: "gate rejected",
		e: storage.Event{Kind: "model.rejected", Actor: "kilnd", Pipeline: "cancer", Refs: []string{"cancer/m3"},
			Details: map[string]string{"gate": "accuracy 0.5 is below the floor 0.9", "reason": "accuracy 0.5 is below the floor 0.9"}},
		level: slog.LevelWarn, msg: "model cancer/m3 rejected: accuracy 0.5 is below the floor 0.9",
		attrs: map[string]string{"pipeline": "cancer", "model": "cancer/m3", "reason": "accuracy 0.5 is below the floor 0.9"},
	}, {
		name:  "pipeline",
		e:     storage.Event{Kind: "pipeline.image_missing", Actor: "kilnd", Pipeline: "cancer", Refs: []string{"kiln.local/t:1"}, Details: map[string]string{"error": "not found"}},
		level: slog.LevelWarn, msg: "pipeline cancer image missing: not found",
		attrs: map[string]string{"pipeline": "cancer", "reason": "not found"},
	}, {
		name: "rollback",
		e: storage.Event{Kind: "model.rolled_back_to", Actor: "kilnd", Pipeline: "cancer", Refs: []string{"cancer/m1", "cancer/e3", "cancer/m2"},
			Details: map[string]string{"from": "cancer/m2", "reason": "live worse than standby (p=0.001)"}},
		level: slog.LevelWarn, msg: "pipeline cancer rolled back to model cancer/m1 from cancer/m2: live worse than standby (p=0.001)",
		attrs: map[string]string{"pipeline": "cancer", "model": "cancer/m1", "deployment": "cancer/e3", "reason": "live worse than standby (p=0.001)"},
	}, {
		name: "reload rejected",
		e: storage.Event{Kind: "pipelines.reload_rejected", Actor: "uid:0",
			Details: map[string]string{"trigger": "api", "error": "/e/fans.yaml:2:8: data.format: bad\n/e/b.yaml:1: name: bad"}},
		level: slog.LevelWarn, msg: "pipelines reload rejected (api) by uid:0: /e/fans.yaml:2:8: data.format: bad; /e/b.yaml:1: name: bad; the old pipelines keep running",
		attrs: map[string]string{"reason": "/e/fans.yaml:2:8: data.format: bad; /e/b.yaml:1: name: bad"},
	}, {
		name:  "reloaded",
		e:     storage.Event{Kind: "pipelines.reloaded", Actor: "kilnd", Refs: []string{"fans", "pumps"}, Details: map[string]string{"trigger": "folder", "added": "fans"}},
		level: slog.LevelInfo, msg: "pipelines reloaded (folder): added fans, changed none, removed none",
		attrs: map[string]string{},
	}, {
		name:  "gpu",
		e:     storage.Event{Kind: "gpu.unhealthy", Actor: "kilnd", Refs: []string{"GPU-1234"}, Details: map[string]string{"reason": "XID 79"}},
		level: slog.LevelWarn, msg: "gpu GPU-1234 unhealthy: XID 79",
		attrs: map[string]string{"gpu_uuid": "GPU-1234", "reason": "XID 79"},
	}, {
		name:  "no ref",
		e:     storage.Event{Kind: "ingest.paused", Actor: "kilnd", Details: map[string]string{"reason": "disk full"}},
		level: slog.LevelWarn, msg: "ingest paused: disk full",
		attrs: map[string]string{"reason": "disk full"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.e.Seq = 42
			level, msg, attrs := eventLine(tt.e)
			if level != tt.level || msg != tt.msg {
				t.Errorf("eventLine = %v %q\nwant       %v %q", level, msg, tt.level, tt.msg)
			}
			got := map[string]string{}
			for _, a := range attrs {
				got[a.Key] = a.Value.String()
			}
			want := map[string]string{"event": tt.e.Kind, "seq": "42", "actor": tt.e.Actor}
			for k, v := range tt.attrs {
				want[k] = v
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("attrs (-want +got):\n%s", d)
			}
		})
	}
}

// TestJournalFollowsEveryEvent runs the follower on a real store: events
// committed before, during and after the follow are each logged exactly
// once, in order, and nothing from before the store opened.
func TestJournalFollowsEveryEvent(t *testing.T) {
	ctx := context.Background()
	st := storagetest.Open(t)
	appendRun := func(n int) {
		t.Helper()
		if _, err := st.Append(ctx, storage.Event{Kind: "run.failed", Pipeline: "p", Refs: []string{fmt.Sprintf("p/r%d", n)},
			Details: map[string]string{"reason": fmt.Sprintf("exit %d", n)}}); err != nil {
			t.Fatal(err)
		}
	}
	appendRun(1) // an earlier kilnd's: not logged again
	logged := make(recordHandler, 16)
	d := &Daemon{store: st, log: slog.New(logged)}
	seq, _ := st.Head()
	j := &journalFollower{d: d, next: seq + 1}
	appendRun(2) // between open and Run
	jctx, stop := context.WithCancel(ctx)
	done := j.followEvents(jctx)
	appendRun(3)
	var got []string
	for len(got) < 2 {
		select {
		case m := <-logged:
			got = append(got, m)
		case <-time.After(5 * time.Second):
			t.Fatalf("follower logged %q in 5s; want 2 lines", got)
		}
	}
	stop()
	<-done
	appendRun(4) // during the drain, after the follow stopped
	j.flush()
	j.flush() // a second flush logs nothing new
	close(logged)
	for m := range logged {
		got = append(got, m)
	}
	want := []string{"run p/r2 failed: exit 2", "run p/r3 failed: exit 3", "run p/r4 failed: exit 4"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("journal lines (-want +got):\n%s", d)
	}
}

// recordHandler hands each log record's message to the test.
type recordHandler chan string

func (h recordHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h recordHandler) Handle(_ context.Context, r slog.Record) error {
	h <- r.Message
	return nil
}

func (h recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recordHandler) WithGroup(string) slog.Handler      { return h }

func TestRejectedSpecs(t *testing.T) {
	err := errors.Join(
		&config.Error{File: "/p/a.yaml", Line: 2, Column: 7, Path: "data.format", Msg: "bad"},
		errors.Join(&config.Error{File: "/p/b.yaml", Line: 1, Path: "name", Msg: "bad"},
			&config.Error{File: "/p/b.yaml", Line: 4, Path: "train.image", Msg: "missing"}),
		&fs.PathError{Op: "open", Path: "/p/c.yaml", Err: fs.ErrPermission},
		errors.New("read pipelines dir: boom"),
	)
	got := rejectedSpecs(err, "/p")
	want := []api.RejectedSpec{
		{File: "/p/a.yaml", Error: "/p/a.yaml:2:7: data.format: bad"},
		{File: "/p/b.yaml", Error: "/p/b.yaml:1: name: bad; /p/b.yaml:4: train.image: missing"},
		{File: "/p/c.yaml", Error: "open /p/c.yaml: permission denied"},
		{File: "/p", Error: "read pipelines dir: boom"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("rejectedSpecs (-want +got):\n%s", d)
	}
}
