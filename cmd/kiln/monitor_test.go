package main

import (
	"bytes"
	"encoding/csv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/daemon/ui/chart/charttest"
)

// TestAccuracyCSV: a header, then one line per point in time order; an
// undefined metric is an empty field.
func TestAccuracyCSV(t *testing.T) {
	a := charttest.Sample()
	a.Models[1].Points[2].Value = nil
	var b bytes.Buffer
	if err := writeAccuracyCSV(&b, a); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&b).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1+7 {
		t.Fatalf("%d records, want a header and 7 points:\n%v", len(recs), recs)
	}
	if want := []string{"time", "pipeline", "metric", "model", "role", "feedback", "rows", "value", "labels", "cumulative"}; !cmp.Equal(recs[0], want) {
		t.Errorf("header = %v", recs[0])
	}
	if want := []string{"2025-03-01T09:00:00Z", "iris", "accuracy", "iris/m1", "live", "iris/d1", "10", "0.8", "10", "0.8"}; !cmp.Equal(recs[1], want) {
		t.Errorf("first point = %v, want %v", recs[1], want)
	}
	last := recs[len(recs)-1]
	if last[3] != "iris/m2" || last[7] != "" || last[9] != "0.4" {
		t.Errorf("last point = %v, want iris/m2 with an empty value", last)
	}
	for i := 2; i < len(recs); i++ {
		if recs[i][0] < recs[i-1][0] {
			t.Errorf("points out of time order: %v after %v", recs[i], recs[i-1])
		}
	}
}

func TestAccuracyTable(t *testing.T) {
	var b bytes.Buffer
	if err := printAccuracy(&b, charttest.Sample()); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"live iris/m1, standby iris/m2", "CUMULATIVE", "0.8500", "rollback", "iris/e3"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "iris/d"); n != 7 {
		t.Errorf("table has %d point rows, want 7:\n%s", n, out)
	}
	b.Reset()
	if err := printAccuracy(&b, api.Accuracy{Pipeline: "pumps", Metric: "accuracy"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "no labelled feedback yet") {
		t.Errorf("empty table = %q", b.String())
	}
}

func TestStatusMonitorLine(t *testing.T) {
	v := 0.875
	for _, tc := range []struct {
		pm   api.PipelineMonitor
		want string
	}{
		{api.PipelineMonitor{Pipeline: "iris", Live: "iris/m2", Standby: "iris/m1", Metric: "accuracy", Value: &v, Labels: 40},
			"live iris/m2, accuracy 0.8750 on 40 labels since promotion; standby iris/m1"},
		{api.PipelineMonitor{Pipeline: "iris", Live: "iris/m2", Metric: "accuracy"},
			"live iris/m2, accuracy: no labels yet; no standby"},
		{api.PipelineMonitor{Pipeline: "pumps", Live: "pumps/m3", Standby: "pumps/m1", Metric: "mae", StandbyStopped: true},
			"live pumps/m3, mae: no labels yet; standby stopped: only the live model is scored (standby pumps/m1)"},
		{api.PipelineMonitor{Pipeline: "new", Metric: "accuracy"}, "no live model; no standby"},
	} {
		if got := statusMonitorLine(tc.pm); got != tc.want {
			t.Errorf("statusMonitorLine(%+v)\n got %q\nwant %q", tc.pm, got, tc.want)
		}
	}
}

func TestMonitorLines(t *testing.T) {
	v, h := 0.75, 0.9
	var b bytes.Buffer
	monitorLines(&b, &api.ModelMonitor{Metric: "accuracy", Holdout: &h, Promoted: time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC),
		Value: &v, Labels: 40, Excluded: 2, Paired: &api.Paired{Rows: 40, Both: 25, LiveOnly: 5, StandbyOnly: 3, Neither: 7}})
	want := "monitor  accuracy 0.7500 on 40 labels since promotion (promoted 2025-03-01 10:00:00); holdout 0.9000 at promotion; 2 rows left out (in its training data)\n" +
		"paired   both right 25, live only 5, standby only 3, both wrong 7 (40 rows, this model live)\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	b.Reset()
	monitorLines(&b, nil)
	if b.Len() != 0 {
		t.Errorf("nil monitor printed %q", b.String())
	}
}
