package main

import (
	"fmt"
	"strings"

	"github.com/kiln-edge/kiln/daemon/api"
)

type datasetsCmd struct {
	List    datasetsListCmd    `cmd:"" default:"withargs" help:"List dataset versions and quarantined batches (the default)."`
	Show    datasetsShowCmd    `cmd:"" help:"Show one dataset: manifest, validation report, lineage."`
	Release datasetsReleaseCmd `cmd:"" help:"Re-admit a quarantined batch, or a suspect version into training windows; recorded with your uid."`
}

type datasetsListCmd struct {
	Pipeline string `short:"p" help:"Only this pipeline's datasets."`
}

func (c datasetsListCmd) Run(e *cmdEnv) error {
	ds, err := e.client().Datasets(e.ctx, c.Pipeline)
	if err != nil {
		return err
	}
	if e.json() {
		return writeJSON(e.out, ds)
	}
	tw := table(e.out)
	fmt.Fprintln(tw, "DATASET\tKIND\tSTATE\tCREATED\tROWS\tFILES\tDIGEST\tSUSPECT\tREASON")
	for _, d := range ds {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", d.ID, d.Kind, d.State, d.Created.Format("2006-01-02 15:04:05"),
			d.Rows, len(d.Files), orDash(shortDigest(d.Digest)), orDash(d.Suspect), d.Reason)
	}
	return tw.Flush()
}

type datasetsShowCmd struct {
	ID string `arg:"" help:"Dataset ID, e.g. pumps/d12."`
}

func (c datasetsShowCmd) Run(e *cmdEnv) error {
	d, err := e.client().Dataset(e.ctx, c.ID)
	if err != nil {
		return err
	}
	if e.json() {
		return writeJSON(e.out, d)
	}
	tw := table(e.out)
	row(tw, "dataset", fmt.Sprintf("%s (%s, %s)", d.ID, d.Kind, d.State))
	row(tw, "created", d.Created.Format("2006-01-02 15:04:05Z07:00"))
	row(tw, "digest", orDash(d.Digest))
	row(tw, "rows", fmt.Sprint(d.Rows))
	if d.Reason != "" {
		row(tw, "reason", d.Reason)
	}
	if d.ReleasedBy != "" {
		row(tw, "released by", d.ReleasedBy)
	}
	if d.Suspect != "" {
		row(tw, "suspect", "trained "+d.Suspect+", which was rolled back; out of training windows until kiln datasets release "+d.ID)
	}
	if d.QuarantineDir != "" {
		row(tw, "quarantine", d.QuarantineDir+" (REASON.json beside the batch)")
	}
	for _, f := range d.Files {
		row(tw, "file", fmt.Sprintf("%s  %s  %s", f.Path, humanSize(f.Size), shortDigest(f.Digest)))
	}
	for _, p := range d.Parts {
		row(tw, "part", fmt.Sprintf("%s  %s  %s  %s", p.Path, plural(p.Rows, "row"), humanSize(p.Size), shortDigest(p.Digest)))
	}
	row(tw, "upstream", lineageText(d.Upstream))
	row(tw, "downstream", lineageText(d.Downstream))
	if err := tw.Flush(); err != nil {
		return err
	}
	if d.Report != nil {
		fmt.Fprintln(e.out, "\nvalidation report:")
		return writeJSON(e.out, d.Report)
	}
	return nil
}

func lineageText(ns []api.LineageNode) string {
	if len(ns) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(ns))
	for _, n := range ns {
		parts = append(parts, fmt.Sprintf("%s (%s)", n.ID, n.Edge))
	}
	return strings.Join(parts, ", ")
}

type datasetsReleaseCmd struct {
	ID string `arg:"" help:"Quarantined or suspect dataset ID, e.g. pumps/d12."`
}

func (c datasetsReleaseCmd) Run(e *cmdEnv) error {
	d, err := e.client().ReleaseDataset(e.ctx, c.ID)
	if err != nil {
		return err
	}
	if e.json() {
		return writeJSON(e.out, d)
	}
	if d.State != "released" { // a suspect version: admitted before, back in training windows now
		fmt.Fprintf(e.out, "released %s (%s) as %s; it trains again\n", d.ID, plural(d.Rows, "row"), d.ReleasedBy)
		return nil
	}
	fmt.Fprintf(e.out, "released %s (%s) as %s; it was quarantined for: %s\n", d.ID, plural(d.Rows, "row"), d.ReleasedBy, d.Reason)
	return nil
}
