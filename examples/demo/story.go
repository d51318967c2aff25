package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/kiln-edge/kiln/daemon/api"
)

// Step 6: what kiln kept of all this: the live model's lineage, the event
// timeline and the accuracy picture, as SVG (kiln draws it) and PNG; then
// the same state on kilnd's dashboard through `kiln ui`.
func (d *demo) story(ctx context.Context) error {
	d.step(6, "What kiln kept: the live model's lineage, the event timeline, the accuracy picture")
	a, err := d.accuracy(ctx)
	if err != nil {
		return err
	}
	if a.Live == "" {
		return fmt.Errorf("no live model at the end")
	}
	d.rep.Live = a.Live
	if err := d.b.kilnJSON(ctx, &d.rep.Lineage, "lineage", a.Live); err != nil {
		return err
	}
	if len(d.rep.Lineage.Nodes) == 0 {
		return fmt.Errorf("kiln lineage %s: no nodes", a.Live)
	}
	d.say("kiln lineage %s (what it descends from):", a.Live)
	for _, line := range lineageLines(d.rep.Lineage.Nodes) {
		d.say("  %s", line)
	}

	evs, err := d.events(ctx)
	if err != nil {
		return err
	}
	d.rep.Events = len(evs)
	ds, err := d.datasets(ctx)
	if err != nil {
		return err
	}
	feedback := map[string]bool{}
	for _, v := range ds {
		feedback[v.ID] = v.Kind == "feedback"
	}
	d.say("kiln events: %d, hash-chained; the loop's own, after kilnd started:", len(evs))
	scored := 0
	for _, e := range evs {
		if e.Kind == "feedback.scored" {
			scored++
		}
		if line := timelineLine(e, feedback); line != "" {
			d.say("  +%5.1fs %s", e.Time.Sub(d.b.t0).Seconds(), line)
		}
	}
	d.say("  (and %d feedback versions scored through the live and standby models)", scored)

	if err := os.MkdirAll(d.b.opt.out, 0o755); err != nil {
		return err
	}
	svg, err := filepath.Abs(filepath.Join(d.b.opt.out, pipeline+"-accuracy.svg"))
	if err != nil {
		return err
	}
	var wrote struct {
		SVG    string `json:"svg"`
		Points int    `json:"points"`
	}
	if err := d.b.kilnJSON(ctx, &wrote, "models", "accuracy", pipeline, "--svg", svg); err != nil {
		return err
	}
	if wrote.Points == 0 {
		return fmt.Errorf("kiln models accuracy --svg: no points drawn")
	}
	drawing, err := os.ReadFile(svg)
	if err != nil {
		return err
	}
	png := strings.TrimSuffix(svg, ".svg") + ".png"
	if err := writePNG(png, drawing); err != nil {
		return err
	}
	d.rep.SVG, d.rep.PNG = svg, png
	d.say("the accuracy picture (%d points, %d models, promotions and rollbacks marked):", wrote.Points, len(a.Models))
	d.say("  %s", svg)
	d.say("  %s", png)
	return d.dashboard(ctx, evs)
}

// timelineLine is an event of the loop as one short line, or "" for the
// events the timeline leaves out (each feedback version's own).
func timelineLine(e api.Event, feedback map[string]bool) string {
	refs := strings.Join(e.Refs, " ")
	switch e.Kind {
	case "dataset.accepted":
		if len(e.Refs) > 0 && feedback[e.Refs[0]] {
			return ""
		}
		return e.Kind + " " + refs
	case "dataset.quarantined", "dataset.suspect", "model.promoted", "model.rejected":
		return e.Kind + " " + refs
	case "model.rolled_back_to":
		return fmt.Sprintf("%s %s (by %s, trigger %s)", e.Kind, refs, e.Actor, e.Details["trigger"])
	case "monitor.alarm":
		return fmt.Sprintf("%s %s (by the %s test at label %s)", e.Kind, refs, e.Details["by"], e.Details["labels"])
	case "monitor.drift_detected":
		return fmt.Sprintf("%s %s (%s)", e.Kind, refs, e.Details["decision"])
	case "run.queued":
		if t := e.Details["trigger"]; t != "" && t != "new_data" {
			return fmt.Sprintf("%s %s (trigger %s)", e.Kind, refs, t)
		}
		return e.Kind + " " + refs
	}
	return ""
}

// lineageLines prints nodes one a line, indented by depth, with a run of
// three or more siblings of one kind (a run's many feedback versions) as
// one line.
func lineageLines(nodes []api.LineageNode) []string {
	var out []string
	for i := 0; i < len(nodes); {
		n, j := nodes[i], i+1
		for j < len(nodes) && nodes[j].Depth == n.Depth && nodes[j].Edge == n.Edge && kindOf(nodes[j].ID) == kindOf(n.ID) {
			j++
		}
		id := n.ID
		if j-i >= 3 {
			lo, hi := n.ID, n.ID
			for _, m := range nodes[i:j] {
				if idNum(m.ID) < idNum(lo) {
					lo = m.ID
				}
				if idNum(m.ID) > idNum(hi) {
					hi = m.ID
				}
			}
			id = fmt.Sprintf("%s .. %s (%d versions)", lo, hi, j-i)
		} else {
			j = i + 1
		}
		out = append(out, fmt.Sprintf("%s%s (%s)", strings.Repeat("  ", n.Depth), id, n.Edge))
		i = j
	}
	return out
}

// kindOf is an ID's type letter: d, r, m or e in cancer/d12.
func kindOf(id string) string {
	_, local, ok := strings.Cut(id, "/")
	if !ok || local == "" {
		return id
	}
	return local[:1]
}

// idNum is an ID's number: 12 in cancer/d12.
func idNum(id string) int {
	_, local, _ := strings.Cut(id, "/")
	n, _ := strconv.Atoi(strings.TrimLeft(local, "abcdefghijklmnopqrstuvwxyz"))
	return n
}
