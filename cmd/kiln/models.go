package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

type runsCmd struct {
	List   runsListCmd   `cmd:"" default:"withargs" help:"List runs (the default)."`
	Show   runsShowCmd   `cmd:"" help:"Show one run."`
	Start  runsStartCmd  `cmd:"" help:"Train a pipeline now, whatever its triggers say."`
	Cancel runsCancelCmd `cmd:"" help:"Stop a queued or running run."`
}

type runsListCmd struct {
	Pipeline string `short:"p" help:"Only this pipeline's runs."`
}

func (c runsListCmd) Run(e *cmdEnv) error {
	rs, err := e.client().Runs(e.ctx, c.Pipeline)
	if err != nil {
		return err
	}
	if e.json() {
		return writeJSON(e.out, rs)
	}
	tw := table(e.out)
	fmt.Fprintln(tw, "RUN\tSTATE\tCREATED\tDATASETS\tGPU\tREASON")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", r.ID, r.State, r.Created.Format("2006-01-02 15:04:05"), len(r.Datasets), orDash(r.GPU), r.Reason)
	}
	return tw.Flush()
}

type runsShowCmd struct {
	ID string `arg:"" help:"Run ID, e.g. iris/r9."`
}

func (c runsShowCmd) Run(e *cmdEnv) error {
	r, err := e.client().Run(e.ctx, c.ID)
	if err != nil {
		return err
	}
	return writeJSON(e.out, r)
}

type runsStartCmd struct {
	Pipeline string `arg:"" help:"Pipeline name."`
}

func (c runsStartCmd) Run(e *cmdEnv) error {
	r, err := e.client().Train(e.ctx, c.Pipeline)
	if err != nil {
		return err
	}
	if e.json() {
		return writeJSON(e.out, r)
	}
	if r.Queued {
		fmt.Fprintf(e.out, "run %s queued behind %s; it starts when that is done (kiln runs show %s)\n", r.Run, r.Behind, r.Run)
		return nil
	}
	fmt.Fprintf(e.out, "run %s queued; follow it with: kiln logs %s -f\n", r.Run, r.Run)
	return nil
}

type runsCancelCmd struct {
	ID string `arg:"" help:"Run ID."`
}

func (c runsCancelCmd) Run(e *cmdEnv) error {
	r, err := e.client().CancelRun(e.ctx, c.ID)
	if err != nil || e.json() {
		return jsonOr(e, r, err)
	}
	fmt.Fprintf(e.out, "run %s %s\n", r.ID, r.State)
	return nil
}

// jsonOr is the end of an action's Run under -o json: the answer, or the
// error alone (nothing on stdout).
func jsonOr(e *cmdEnv, v any, err error) error {
	if err != nil {
		return err
	}
	return writeJSON(e.out, v)
}

type logsCmd struct {
	RunID  string `arg:"" name:"run" help:"Run ID."`
	Follow bool   `short:"f" help:"Keep printing until the run ends."`
}

func (c logsCmd) Run(e *cmdEnv) error {
	err := e.client().Logs(e.ctx, c.RunID, c.Follow, e.out)
	if e.ctx.Err() != nil {
		return nil // interrupted by the user
	}
	return err
}

type modelsCmd struct {
	List     modelsListCmd     `cmd:"" default:"withargs" help:"List models (the default)."`
	Show     modelsShowCmd     `cmd:"" help:"Show a model: metrics, lineage, state history."`
	Accuracy modelsAccuracyCmd `cmd:"" help:"Each model's metric on labelled feedback over time (--csv, --svg FILE)."`
}

type modelsListCmd struct {
	Pipeline string `short:"p" help:"Only this pipeline's models."`
}

func (c modelsListCmd) Run(e *cmdEnv) error {
	ms, err := e.client().Models(e.ctx, c.Pipeline)
	if err != nil {
		return err
	}
	if e.json() {
		return writeJSON(e.out, ms)
	}
	tw := table(e.out)
	fmt.Fprintln(tw, "MODEL\tSTATE\tCREATED\tRUN\tMETRICS\tREASON")
	for _, m := range ms {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", m.ID, m.State, m.Created.Format("2006-01-02 15:04:05"), m.Run, metrics(m.Metrics), m.Reason)
	}
	return tw.Flush()
}

func metrics(m map[string]float64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%.4g", k, m[k]))
	}
	return orDash(strings.Join(parts, " "))
}

type modelsShowCmd struct {
	ID string `arg:"" help:"Model ID, e.g. iris/m7."`
}

func (c modelsShowCmd) Run(e *cmdEnv) error {
	m, err := e.client().Model(e.ctx, c.ID)
	if err != nil {
		return err
	}
	if e.json() {
		return writeJSON(e.out, m)
	}
	fmt.Fprintf(e.out, "model    %s (%s)\nrun      %s\ncreated  %s\nmetrics  %s\ntrainer  %s\n", m.ID, m.State, m.Run,
		m.Created.Format("2006-01-02 15:04:05"), metrics(m.Metrics), metrics(m.TrainerMetrics))
	if m.Reason != "" {
		fmt.Fprintf(e.out, "reason   %s\n", m.Reason)
	}
	monitorLines(e.out, m.Monitor)
	fmt.Fprintf(e.out, "files    %s\n\nhistory:\n", orDash(strings.Join(m.Files, ", ")))
	for _, ev := range m.History {
		fmt.Fprintf(e.out, "  %d\t%s\t%s\t%s\n", ev.Seq, ev.Time.Format("2006-01-02 15:04:05"), ev.Actor, ev.Kind)
	}
	fmt.Fprintln(e.out, "\nlineage (ancestors):")
	for _, n := range m.Lineage {
		fmt.Fprintf(e.out, "  %s%s (%s)\n", strings.Repeat("  ", n.Depth-1), n.ID, n.Edge)
	}
	return nil
}

type promoteCmd struct {
	Model string `arg:"" help:"Model ID to make live."`
	Force bool   `help:"Skip the evaluation and the gate."`
}

func (c promoteCmd) Run(e *cmdEnv) error {
	m, err := e.client().Promote(e.ctx, c.Model, c.Force)
	if err != nil || e.json() {
		return jsonOr(e, m, err)
	}
	fmt.Fprintf(e.out, "%s is live (%s)\n", m.ID, metrics(m.Metrics))
	return nil
}

type rollbackCmd struct {
	Pipeline string `arg:"" help:"Pipeline name."`
	To       string `help:"Model to roll back to (default: the standby)." placeholder:"MODEL"`
}

func (c rollbackCmd) Run(e *cmdEnv) error {
	out, err := e.client().Rollback(e.ctx, c.Pipeline, c.To)
	if err != nil || e.json() {
		return jsonOr(e, out, err)
	}
	fmt.Fprintf(e.out, "%s rolled back; live: %s\n", c.Pipeline, out["live"])
	return nil
}

type pinCmd struct {
	Pipeline string `arg:"" help:"Pipeline name."`
	Model    string `arg:"" help:"Model to hold the pipeline on."`
}

func (c pinCmd) Run(e *cmdEnv) error {
	out, err := e.client().Pin(e.ctx, c.Pipeline, c.Model)
	if err != nil || e.json() {
		return jsonOr(e, out, err)
	}
	fmt.Fprintf(e.out, "%s pinned to %s: automatic promotion and rollback are off until kiln unpin %s\n", c.Pipeline, c.Model, c.Pipeline)
	return nil
}

type unpinCmd struct {
	Pipeline string `arg:"" help:"Pipeline name."`
}

func (c unpinCmd) Run(e *cmdEnv) error {
	out, err := e.client().Unpin(e.ctx, c.Pipeline)
	if err != nil || e.json() {
		return jsonOr(e, out, err)
	}
	fmt.Fprintf(e.out, "%s unpinned; live: %s\n", c.Pipeline, out["live"])
	return nil
}

type lineageCmd struct {
	ID    string `arg:"" help:"A dataset, run, model or deployment ID."`
	Up    bool   `help:"What it descends from (the default)." xor:"dir"`
	Down  bool   `help:"What descends from it." xor:"dir"`
	Depth int    `help:"How many edges to follow (0: all)." default:"0"`
	Dot   bool   `help:"Print Graphviz DOT (render with: dot -Tsvg)."`
}

func (c lineageCmd) Run(e *cmdEnv) error {
	dir := "up"
	if c.Down {
		dir = "down"
	}
	l, err := e.client().Lineage(e.ctx, c.ID, dir, c.Depth)
	if err != nil {
		return err
	}
	switch {
	case c.Dot:
		fmt.Fprintf(e.out, "digraph lineage {\n  rankdir=LR;\n  %q [shape=box, style=bold];\n", l.ID)
		for _, ed := range l.Edges {
			fmt.Fprintf(e.out, "  %q -> %q [label=%q];\n", ed.From, ed.To, ed.Type)
		}
		fmt.Fprintln(e.out, "}")
		return nil
	case e.json():
		return writeJSON(e.out, l)
	}
	fmt.Fprintln(e.out, l.ID)
	for _, n := range l.Nodes {
		fmt.Fprintf(e.out, "%s%s (%s)\n", strings.Repeat("  ", n.Depth), n.ID, n.Edge)
	}
	return nil
}
