package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-edge/kiln/storage/atomicfile"
)

// Results is bench/results.json: every group's runs, the medians reported
// and where and when each group ran. BENCHMARKS.md is generated from it
// (markdown), never typed. A run of some groups (-only) replaces those
// groups' entries and keeps the others, each with its own commit, date and
// machine, so groups can be rerun one at a time.
type Results struct {
	// Machine, Commit, Date and Command are those of the last kilnbench
	// run that wrote the file; each group keeps its own.
	Machine Machine       `json:"machine"`
	Commit  string        `json:"commit"`
	Date    string        `json:"date"`
	Command string        `json:"command"`
	Groups  []GroupResult `json:"groups"`
}

// GroupResult is one group's entry: all its runs of one kilnbench run.
type GroupResult struct {
	Name    string  `json:"name"`
	Commit  string  `json:"commit"`
	Date    string  `json:"date"`
	Command string  `json:"command"`
	Machine Machine `json:"machine"`
	Repeat  int     `json:"repeat"`
	Quick   bool    `json:"quick,omitempty"`
	// WallS is each run's wall time in seconds, set-up included.
	WallS   []float64      `json:"wall_s"`
	Figures []FigureResult `json:"figures"`
}

// FigureResult is one figure over a group's runs. Value is the median of
// the measured runs (by nearest rank, so it is one run's value), Min and
// Max their range; all three are null when no run measured the figure.
// Pass is judged on the median and needs every run measured and no run
// failed by its group's own checks. Detail is the median run's.
type FigureResult struct {
	Name   string     `json:"name"`
	Unit   string     `json:"unit"`
	Goal   string     `json:"goal"`
	Runs   []*float64 `json:"runs"`
	Value  *float64   `json:"value"`
	Min    *float64   `json:"min"`
	Max    *float64   `json:"max"`
	Pass   bool       `json:"pass"`
	Detail string     `json:"detail"`
}

// aggregate folds a group's runs (each run's figures) into one result per
// figure, in the order figures first appear. A figure missing from a run
// counts as not measured in that run.
func aggregate(runs [][]Figure) []FigureResult {
	var names []string
	byName := map[string][]*Figure{}
	for i, figs := range runs {
		for j := range figs {
			f := &figs[j]
			if _, ok := byName[f.Name]; !ok {
				names = append(names, f.Name)
				byName[f.Name] = make([]*Figure, len(runs))
			}
			byName[f.Name][i] = f
		}
	}
	out := make([]FigureResult, 0, len(names))
	for _, name := range names {
		out = append(out, aggregateOne(byName[name]))
	}
	return out
}

func aggregateOne(runs []*Figure) FigureResult {
	var first *Figure
	for _, f := range runs {
		if f != nil {
			first = f
			break
		}
	}
	r := FigureResult{Name: first.Name, Unit: first.Unit, Goal: first.Goal, Runs: make([]*float64, len(runs))}
	var measuredIdx, missing, vetoed []int
	for i, f := range runs {
		switch {
		case f == nil || f.Value == nil:
			missing = append(missing, i)
		default:
			v := *f.Value
			r.Runs[i] = &v
			measuredIdx = append(measuredIdx, i)
			// A group may fail a figure whose value meets the goal (a check
			// of its own failed: requests lost, too few samples).
			if !f.Pass && meets(v, f.Goal) {
				vetoed = append(vetoed, i)
			}
		}
	}
	if len(measuredIdx) == 0 {
		r.Detail = first.Detail
		if len(runs) > 1 {
			r.Detail += fmt.Sprintf(" (none of %d runs measured it)", len(runs))
		}
		return r
	}
	slices.SortStableFunc(measuredIdx, func(a, b int) int { return cmp.Compare(*r.Runs[a], *r.Runs[b]) })
	mid := measuredIdx[(len(measuredIdx)+1)/2-1] // nearest rank, as median()
	lo, hi := *r.Runs[measuredIdx[0]], *r.Runs[measuredIdx[len(measuredIdx)-1]]
	med := *r.Runs[mid]
	r.Value, r.Min, r.Max = &med, &lo, &hi
	r.Pass = len(missing) == 0 && len(vetoed) == 0 && meets(med, r.Goal)

	var pre []string
	if len(runs) == 1 {
		pre = append(pre, "one run")
	} else {
		pre = append(pre, fmt.Sprintf("median of %d (%s)", len(measuredIdx), fmtRange(lo, hi, r.Unit)))
	}
	if len(missing) > 0 {
		why := "absent from the run"
		if f := runs[missing[0]]; f != nil {
			why = f.Detail
		}
		pre = append(pre, fmt.Sprintf("%d of %d runs not measured (run %s: %s)", len(missing), len(runs), runList(missing), why))
	}
	if len(vetoed) > 0 {
		pre = append(pre, fmt.Sprintf("run %s failed the group's own checks (first: %s)", runList(vetoed), runs[vetoed[0]].Detail))
	}
	r.Detail = strings.Join(pre, "; ") + "; " + runs[mid].Detail
	return r
}

// runList numbers runs from 1 as a reader counts them: "2, 4".
func runList(idx []int) string {
	parts := make([]string, len(idx))
	for i, x := range idx {
		parts[i] = strconv.Itoa(x + 1)
	}
	return strings.Join(parts, ", ")
}

// measuredAny says whether any figure of g has a value.
func (g GroupResult) measuredAny() bool {
	return slices.ContainsFunc(g.Figures, func(f FigureResult) bool { return f.Value != nil })
}

// put replaces g's entry, except that a run which measured nothing (no
// GPU, no containerd here) keeps an entry that measured something: its
// date, commit and machine say where that was. The note says so.
func (r *Results) put(g GroupResult) (note string) {
	i := slices.IndexFunc(r.Groups, func(o GroupResult) bool { return o.Name == g.Name })
	switch {
	case i < 0:
		r.Groups = append(r.Groups, g)
	case !g.measuredAny() && r.Groups[i].measuredAny():
		old := r.Groups[i]
		return fmt.Sprintf("group %s measured nothing here (%s); kept its figures of %s at %s", g.Name,
			g.Figures[0].Detail, old.Date, old.Commit)
	default:
		r.Groups[i] = g
	}
	r.sortGroups()
	return ""
}

// sortGroups puts groups in BENCH.md's table order.
func (r *Results) sortGroups() {
	slices.SortStableFunc(r.Groups, func(a, b GroupResult) int { return groupRank(a.Name) - groupRank(b.Name) })
}

func groupRank(name string) int {
	if i := slices.Index(groupOrder, name); i >= 0 {
		return i
	}
	return len(groupOrder)
}

// readResults reads a results file; a missing one is empty.
func readResults(path string) (Results, error) {
	var r Results
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return r, err
	}
	if len(b) > 0 && b[0] == '[' {
		return r, fmt.Errorf("%s: an array of figures, the format before -repeat: move it away and rerun", path)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

func writeResults(path string, r Results) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, append(b, '\n'), 0o644)
}

// fmtNum prints a figure with three significant digits, thousands grouped.
func fmtNum(v float64) string {
	a := math.Abs(v)
	switch {
	case v == 0:
		return "0"
	case math.IsNaN(v) || math.IsInf(v, 0):
		return strconv.FormatFloat(v, 'g', -1, 64)
	case a >= 1000:
		s := strconv.FormatFloat(math.Round(a), 'f', 0, 64)
		for i := len(s) - 3; i > 0; i -= 3 {
			s = s[:i] + "," + s[i:]
		}
		if v < 0 {
			s = "-" + s
		}
		return s
	}
	digits := max(0, 2-int(math.Floor(math.Log10(a))))
	s := strconv.FormatFloat(v, 'f', digits, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

// fmtValue is a number with its unit: "0.93x", "0.54 ms", "0.66 %".
func fmtValue(v float64, unit string) string {
	switch unit {
	case "", "x":
		return fmtNum(v) + unit
	}
	return fmtNum(v) + " " + unit
}

func fmtRange(lo, hi float64, unit string) string {
	return fmtNum(lo) + "-" + fmtValue(hi, unit)
}

// shortfall says by how much a median misses its goal: "7% under 1.0",
// "over 0 by 3".
func shortfall(v float64, goal string) string {
	op, num, _ := strings.Cut(strings.TrimSpace(goal), " ")
	want, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil {
		return "goal " + goal
	}
	diff := v - want
	var side string
	switch {
	case strings.HasPrefix(op, ">"):
		side = "under"
	case strings.HasPrefix(op, "<"):
		side = "over"
	default:
		side = "off"
	}
	num = strings.TrimSpace(num)
	if want == 0 {
		return fmt.Sprintf("%s %s by %s", side, num, fmtNum(math.Abs(diff)))
	}
	return fmt.Sprintf("%s%% %s %s", fmtNum(math.Abs(diff)/math.Abs(want)*100), side, num)
}

// commandLine quotes os.Args the way a shell would need them.
func commandLine(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n\"'\\$`|&;<>()*?[]{}~!#") {
			a = strconv.Quote(a)
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}

// shortDate turns RFC 3339 into "2026-11-30 13:40 UTC" for the table.
func shortDate(s string) string {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return s
	}
	return t.UTC().Format("2006-01-02 15:04 UTC")
}
