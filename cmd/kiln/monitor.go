package main

import (
	"cmp"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/storage/atomicfile"
)

// modelsAccuracyCmd is `kiln models accuracy P`: the monitor's series.
type modelsAccuracyCmd struct {
	Pipeline string `arg:"" help:"Pipeline name."`
	CSV      bool   `name:"csv" help:"Print CSV: a header, then one line per point."`
	SVG      string `name:"svg" placeholder:"FILE" help:"Draw the series as an SVG chart into FILE (replaced atomically) instead of printing it."`
}

func (modelsAccuracyCmd) Help() string {
	return `Each model's metric on labelled feedback, one point per feedback version, in label-arrival order;
VALUE is the metric on that version's rows, CUMULATIVE over every label so far. -o json prints the API
object (with the deployments), --csv one line per point, --svg draws a chart.

Examples:
  kiln models accuracy pumps
  kiln models accuracy pumps --csv > pumps-accuracy.csv
  kiln models accuracy pumps --svg /tmp/pumps.svg`
}

func (c modelsAccuracyCmd) Run(e *cmdEnv) error {
	if c.CSV && e.json() {
		return errors.New("--csv and -o json both pick the output; choose one")
	}
	a, err := e.client().Accuracy(e.ctx, c.Pipeline)
	if err != nil {
		return err
	}
	switch {
	case c.SVG != "":
		if err := atomicfile.Write(c.SVG, accuracySVG(a), 0o644); err != nil {
			return err
		}
		if e.json() {
			return writeJSON(e.out, map[string]any{"svg": c.SVG, "points": countPoints(a)})
		}
		fmt.Fprintf(e.out, "wrote %s (%s, %s)\n", c.SVG, plural(countPoints(a), "point"), plural(len(a.Models), "model"))
		return nil
	case e.json():
		return writeJSON(e.out, a)
	case c.CSV:
		return writeAccuracyCSV(e.out, a)
	}
	return printAccuracy(e.out, a)
}

func countPoints(a api.Accuracy) int {
	n := 0
	for _, m := range a.Models {
		n += len(m.Points)
	}
	return n
}

// pointRow is one point with its model, for printing in time order.
type pointRow struct {
	model string
	api.SeriesPoint
}

func pointRows(a api.Accuracy) []pointRow {
	var rows []pointRow
	for _, m := range a.Models {
		for _, p := range m.Points {
			rows = append(rows, pointRow{m.Model, p})
		}
	}
	slices.SortStableFunc(rows, func(x, y pointRow) int {
		return cmp.Or(x.Time.Compare(y.Time), strings.Compare(x.Feedback, y.Feedback))
	})
	return rows
}

func printAccuracy(w io.Writer, a api.Accuracy) error {
	fmt.Fprintf(w, "%s: %s on labelled feedback; live %s, standby %s\n", a.Pipeline, a.Metric, orDash(a.Live), orDash(a.Standby))
	rows := pointRows(a)
	if len(rows) == 0 {
		fmt.Fprintln(w, "no labelled feedback yet")
	} else {
		tw := table(w)
		fmt.Fprintln(tw, "TIME\tMODEL\tROLE\tFEEDBACK\tROWS\tVALUE\tLABELS\tCUMULATIVE")
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%d\t%s\n", r.Time.UTC().Format("2006-01-02 15:04:05"), r.model, r.Role,
				r.Feedback, r.Rows, metricText(r.Value), r.Labels, metricText(r.Cumulative))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(a.Deployments) > 0 {
		fmt.Fprintln(w)
		tw := table(w)
		fmt.Fprintln(tw, "DEPLOYED\tMODEL\tHOW\tDEPLOYMENT")
		for _, d := range a.Deployments {
			how := "promoted"
			if d.Rollback {
				how = "rollback"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", d.Created.UTC().Format("2006-01-02 15:04:05"), d.Model, how, d.ID)
		}
		return tw.Flush()
	}
	return nil
}

// writeAccuracyCSV writes one line per point; an undefined metric is empty.
func writeAccuracyCSV(w io.Writer, a api.Accuracy) error {
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"time", "pipeline", "metric", "model", "role", "feedback", "rows", "value", "labels", "cumulative"})
	csvNum := func(v *float64) string {
		if v == nil {
			return ""
		}
		return strconv.FormatFloat(*v, 'g', -1, 64)
	}
	for _, r := range pointRows(a) {
		_ = cw.Write([]string{r.Time.UTC().Format(time.RFC3339Nano), a.Pipeline, a.Metric, r.model, r.Role, r.Feedback,
			strconv.FormatInt(r.Rows, 10), csvNum(r.Value), strconv.FormatInt(r.Labels, 10), csvNum(r.Cumulative)})
	}
	cw.Flush()
	return cw.Error()
}

func metricText(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.4f", *v)
}

// monitorLines is the monitor's part of kiln models show.
func monitorLines(w io.Writer, mm *api.ModelMonitor) {
	if mm == nil {
		return
	}
	var b strings.Builder
	switch {
	case mm.Labels == 0:
		fmt.Fprintf(&b, "%s: no labels yet", mm.Metric)
	case mm.Promoted.IsZero():
		fmt.Fprintf(&b, "%s %s on %s", mm.Metric, metricText(mm.Value), plural(mm.Labels, "label"))
	default:
		fmt.Fprintf(&b, "%s %s on %s since promotion", mm.Metric, metricText(mm.Value), plural(mm.Labels, "label"))
	}
	if !mm.Promoted.IsZero() {
		fmt.Fprintf(&b, " (promoted %s)", mm.Promoted.UTC().Format("2006-01-02 15:04:05"))
	}
	if mm.Holdout != nil {
		fmt.Fprintf(&b, "; holdout %s at promotion", metricText(mm.Holdout))
	}
	if mm.Excluded > 0 {
		fmt.Fprintf(&b, "; %s left out (in its training data)", plural(mm.Excluded, "row"))
	}
	fmt.Fprintf(w, "monitor  %s\n", b.String())
	if p := mm.Paired; p != nil {
		fmt.Fprintf(w, "paired   both right %d, live only %d, standby only %d, both wrong %d (%s, this model live)\n",
			p.Both, p.LiveOnly, p.StandbyOnly, p.Neither, plural(p.Rows, "row"))
	}
}

// statusMonitorLine is one pipeline's line of kiln status.
func statusMonitorLine(pm api.PipelineMonitor) string {
	var b strings.Builder
	if pm.Live == "" {
		b.WriteString("no live model")
	} else {
		fmt.Fprintf(&b, "live %s, ", pm.Live)
		if pm.Labels == 0 || pm.Value == nil {
			fmt.Fprintf(&b, "%s: no labels yet", pm.Metric)
		} else {
			fmt.Fprintf(&b, "%s %s on %s since promotion", pm.Metric, metricText(pm.Value), plural(pm.Labels, "label"))
		}
	}
	switch {
	case pm.StandbyStopped:
		b.WriteString("; standby stopped: only the live model is scored")
		if pm.Standby != "" {
			fmt.Fprintf(&b, " (standby %s)", pm.Standby)
		}
	case pm.Standby != "":
		fmt.Fprintf(&b, "; standby %s", pm.Standby)
	default:
		b.WriteString("; no standby")
	}
	if w := pm.Watch; w != nil {
		b.WriteString("\n" + watchLine(w))
	}
	return b.String()
}

// watchLine says how the monitor watches: the label rate and delay, the
// detector's phase, and what a 5-point drop would take to be seen.
func watchLine(w *api.Watch) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  %.0f labels/day", w.LabelsPerDay)
	if w.LabelDelayP50S > 0 {
		fmt.Fprintf(&b, ", label delay p50 %s", time.Duration(w.LabelDelayP50S*float64(time.Second)).Round(time.Second))
	}
	switch w.Detector {
	case "warmup":
		fmt.Fprintf(&b, "; detector learning its baseline (%d of %s, %d of at most %s)",
			w.WarmupMisses, plural(w.WarmupMaxMisses, "miss", "misses"), w.WarmupLabels, plural(w.WarmupMaxLabels, "label"))
	case "armed":
		fmt.Fprintf(&b, "; detector armed at baseline %.4f", w.Baseline)
	case "alarm":
		fmt.Fprintf(&b, "; %s", w.Alarm)
	case "":
		b.WriteString("; detector not started (no labels yet)")
	default:
		fmt.Fprintf(&b, "; detector %s", w.Detector)
	}
	if w.Detect5PointS > 0 {
		fmt.Fprintf(&b, "; a 5-point drop would be seen in about %s", time.Duration(w.Detect5PointS*float64(time.Second)).Round(time.Minute))
	}
	if w.Blind {
		fmt.Fprintf(&b, "; BLIND: %s", w.BlindWhy)
	}
	return b.String()
}

// feedbackCmd is `kiln feedback P [FILE|-]`.
type feedbackCmd struct {
	Pipeline string `arg:"" help:"Pipeline name."`
	File     string `arg:"" optional:"" default:"-" help:"Feedback file, or - for stdin (the default)."`
}

func (feedbackCmd) Help() string {
	return `Sends labelled feedback to kilnd, which writes it into the pipeline's feedback folder as if it had
been dropped there: labelled rows in the data's own columns (label included), or late labels as
request_id,label (JSONL: {"id": ..., "label": ...}) for requests the endpoint logged. The monitor
scores it through the live and the standby model once ingest has validated it.

Examples:
  kiln feedback pumps labelled.csv
  kiln feedback pumps - < late-labels.csv`
}

func (c feedbackCmd) Run(e *cmdEnv) error {
	f := os.Stdin
	if c.File != "-" {
		var err error
		if f, err = os.Open(c.File); err != nil {
			return err
		}
		defer func() { _ = f.Close() }() // read-only
	}
	// A regular file (named, or redirected to stdin) is sent with its
	// length, so kilnd can refuse one over data.max_file_size at once.
	size := int64(-1)
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
		if off, err := f.Seek(0, io.SeekCurrent); err == nil {
			size = fi.Size() - off
		}
	}
	r, err := e.client().Feedback(e.ctx, c.Pipeline, f, size)
	if err != nil {
		return err
	}
	if e.json() {
		return writeJSON(e.out, r)
	}
	fmt.Fprintf(e.out, "queued as %s; `kiln datasets -p %s` shows it once validated\n", r.File, r.Pipeline)
	return nil
}
