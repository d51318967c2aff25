package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func ptr(v float64) *float64 { return &v }

// reportRuns is three runs of a made-up group: a figure measured in all
// runs, one never measured, one measured twice, and one whose group failed
// it in a run although its value met the goal.
func reportRuns() [][]Figure {
	vetoed := measured("g.clean", 0, "", "== 0", "run 2: 3 requests failed")
	vetoed.Pass = false
	return [][]Figure{
		{measured("g.ratio", 3, "x", ">= 1.5", "run 1"), unmeasured("g.none", "ms", "<= 5", "no wrk"),
			measured("g.some", 4, "ms", "<= 5", "run 1"), measured("g.clean", 0, "", "== 0", "run 1")},
		{measured("g.ratio", 1, "x", ">= 1.5", "run 2"), unmeasured("g.none", "ms", "<= 5", "no wrk"),
			unmeasured("g.some", "ms", "<= 5", "kilnd died"), vetoed},
		{measured("g.ratio", 2, "x", ">= 1.5", "run 3"), unmeasured("g.none", "ms", "<= 5", "no wrk"),
			measured("g.some", 3, "ms", "<= 5", "run 3"), measured("g.clean", 0, "", "== 0", "run 3")},
	}
}

func TestAggregate(t *testing.T) {
	got := aggregate(reportRuns())
	want := []FigureResult{
		{Name: "g.ratio", Unit: "x", Goal: ">= 1.5", Runs: []*float64{ptr(3), ptr(1), ptr(2)}, Value: ptr(2), Min: ptr(1), Max: ptr(3),
			Pass: true, Detail: "median of 3 (1-3x); run 3"},
		{Name: "g.none", Unit: "ms", Goal: "<= 5", Runs: []*float64{nil, nil, nil},
			Detail: "not measured: no wrk (none of 3 runs measured it)"},
		// Two measured runs: the median is the lower (nearest rank), and a
		// missing run fails the figure although the median meets the goal.
		{Name: "g.some", Unit: "ms", Goal: "<= 5", Runs: []*float64{ptr(4), nil, ptr(3)}, Value: ptr(3), Min: ptr(3), Max: ptr(4),
			Detail: "median of 2 (3-4 ms); 1 of 3 runs not measured (run 2: not measured: kilnd died); run 3"},
		{Name: "g.clean", Goal: "== 0", Runs: []*float64{ptr(0), ptr(0), ptr(0)}, Value: ptr(0), Min: ptr(0), Max: ptr(0),
			Detail: "median of 3 (0-0); run 2 failed the group's own checks (first: run 2: 3 requests failed); run 2: 3 requests failed"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("aggregate (-want +got):\n%s", diff)
	}

	// One run: no median to speak of, and the detail says so.
	one := aggregate(reportRuns()[:1])
	if one[0].Detail != "one run; run 1" || *one[0].Value != 3 || !one[0].Pass {
		t.Fatalf("one run: %+v", one[0])
	}
}

// "Not measured" is null in the JSON, never a zero.
func TestUnmeasuredIsNull(t *testing.T) {
	b, err := json.Marshal(unmeasured("g.none", "ms", "<= 5", "no wrk"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"value":null`) {
		t.Fatalf("unmeasured figure: %s; want \"value\":null", b)
	}
	b, err = json.Marshal(aggregate(reportRuns())[1])
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{`"runs":[null,null,null]`, `"value":null`, `"min":null`, `"max":null`} {
		if !strings.Contains(string(b), k) {
			t.Fatalf("aggregated unmeasured figure: %s; want %s", b, k)
		}
	}
	b, _ = json.Marshal(measured("g.zero", 0, "", "== 0", "")) // a real zero stays 0
	if !strings.Contains(string(b), `"value":0`) {
		t.Fatalf("measured zero: %s", b)
	}
}

func entry(name, commit string, m Machine, figs ...FigureResult) GroupResult {
	return GroupResult{Name: name, Commit: commit, Date: "2026-11-30T13:40:00Z", Machine: m, Repeat: 3, WallS: []float64{10, 12, 11}, Figures: figs}
}

var (
	buildBox = Machine{CPU: "AMD EPYC", Cores: 2, Containerd: "1.6.20", Baselines: map[string]string{"wrk": "4.1.0"}}
	gpuBox   = Machine{CPU: "Xeon", Cores: 16, GPU: "NVIDIA H200"}
)

// A run of some groups replaces only their entries, keeps BENCH.md's
// order, and does not let a group that measured nothing here replace one
// that measured something elsewhere.
func TestMerge(t *testing.T) {
	figs := aggregate(reportRuns())
	var r Results
	for _, g := range []GroupResult{entry("gpu", "aaa", gpuBox, figs[0]), entry("ingest", "aaa", buildBox, figs[0])} {
		if note := r.put(g); note != "" {
			t.Fatalf("put %s: %s", g.Name, note)
		}
	}
	if note := r.put(entry("storage", "bbb", buildBox, figs[2])); note != "" {
		t.Fatal(note)
	}
	if note := r.put(entry("ingest", "bbb", buildBox, figs[3])); note != "" {
		t.Fatal(note)
	}
	note := r.put(entry("gpu", "bbb", buildBox, figs[1]))
	if !strings.Contains(note, "kept its figures of 2026-11-30T13:40:00Z at aaa") {
		t.Fatalf("gpu unmeasured here: note %q", note)
	}
	var got []string
	for _, g := range r.Groups {
		got = append(got, g.Name+"@"+g.Commit+":"+g.Figures[0].Name)
	}
	want := []string{"ingest@bbb:g.clean", "storage@bbb:g.some", "gpu@aaa:g.ratio"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("groups after merging (-want +got):\n%s", diff)
	}

	// An unmeasured entry is replaced by a measured one.
	var u Results
	u.put(entry("serve", "aaa", buildBox, figs[1]))
	u.put(entry("serve", "bbb", buildBox, figs[0]))
	if u.Groups[0].Commit != "bbb" {
		t.Fatalf("serve kept %s, want the measured bbb", u.Groups[0].Commit)
	}
}

// The results file survives a round trip; an old array of figures is refused.
func TestResultsFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "results.json")
	if r, err := readResults(path); err != nil || len(r.Groups) != 0 {
		t.Fatalf("missing file: %+v, %v", r, err)
	}
	r := Results{Commit: "bbb", Groups: []GroupResult{entry("storage", "bbb", buildBox, aggregate(reportRuns())...)}}
	if err := writeResults(path, r); err != nil {
		t.Fatal(err)
	}
	back, err := readResults(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(r, back); diff != "" {
		t.Fatalf("round trip (-wrote +read):\n%s", diff)
	}
	if err := os.WriteFile(path, []byte(`[{"name": "x", "value": 0}]`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readResults(path); err == nil || !strings.Contains(err.Error(), "array of figures") {
		t.Fatalf("old format: %v", err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("temp files left beside the results: %v", ents)
	}
}

func TestMarkdown(t *testing.T) {
	figs := aggregate(reportRuns())
	r := Results{Groups: []GroupResult{entry("ingest", "bbb", buildBox, figs...), entry("gpu", "aaa", gpuBox, figs[0])}}
	md := markdown(r)
	for _, want := range []string{
		"| `g.ratio` | 2x | 1-3x | >= 1.5 | yes | median of 3 (1-3x); run 3 |",
		"| **g.none** | - | - | <= 5 | **not measured** | not measured: no wrk (none of 3 runs measured it) |",
		"| **g.some** | 3 ms | 3-4 ms | <= 5 | **no** |",
		"| **g.clean** | 0 | 0-0 | == 0 | **no** |",
		"| ingest | 3 | A | `bbb` | 2026-11-30 13:40 UTC | 11 s (10-12) |",
		"| gpu | 3 | B | `aaa` |",
		"- **A**: AMD EPYC, 2 cores",
		"- **B**: Xeon, 16 cores",
		"The `gpu` group",
		"Figures are medians of 3 runs, each group's runs back to back, with their range.",
		"- **g.some** (goal <= 5): median 3 ms (3-4 ms) meets the goal, but not every run measured it",
		"- **g.clean** (goal == 0): median 0 (0-0) meets the goal, but a run failed the group's own checks",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(md)
	}
	// A median that misses says by how much.
	miss := FigureResult{Name: "s.ratio", Unit: "x", Goal: ">= 1.0", Runs: []*float64{ptr(0.93), ptr(0.74)}, Value: ptr(0.74), Min: ptr(0.74), Max: ptr(0.93)}
	if got, want := missReason(miss), "median 0.74x (0.74-0.93x), 26% under 1.0"; got != want {
		t.Fatalf("missReason: %q, want %q", got, want)
	}
	if got, want := shortfall(3, "== 0"), "off 0 by 3"; got != want {
		t.Fatalf("shortfall: %q, want %q", got, want)
	}
}

func TestFmtNum(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 0.036: "0.036", 0.255: "0.255", 4.28: "4.28", 12.94: "12.9", 181.3: "181",
		114000: "114,000", 1234567: "1,234,567", -0.5: "-0.5", 1: "1", 0.00012345: "0.000123"} {
		if got := fmtNum(v); got != want {
			t.Errorf("fmtNum(%v) = %q, want %q", v, got, want)
		}
	}
}

// runGroup runs a group -repeat times in a row and keeps every run.
func TestRunGroupRepeats(t *testing.T) {
	n := 0.0
	g := Group{Name: "t", Run: func(context.Context, Options) []Figure {
		n++
		return []Figure{measured("t.n", n, "", "<= 2", "call")}
	}}
	e, ok := runGroup(context.Background(), g, Options{}, 3)
	if !ok || len(e.WallS) != 3 || e.Repeat != 3 {
		t.Fatalf("runGroup: ok %v, %+v", ok, e)
	}
	f := e.Figures[0]
	if diff := cmp.Diff([]*float64{ptr(1), ptr(2), ptr(3)}, f.Runs); diff != "" || *f.Value != 2 || !f.Pass {
		t.Fatalf("runs %s, value %v, pass %v", diff, *f.Value, f.Pass)
	}
}
