package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/daemon/config"
)

type statusCmd struct{}

func (statusCmd) Run(e *cmdEnv) error {
	s, err := e.client().Status(e.ctx)
	if err != nil {
		return err
	}
	if e.json() {
		return writeJSON(e.out, s)
	}
	tw := table(e.out)
	row(tw, "state", s.State)
	row(tw, "status", s.Message)
	row(tw, "version", s.Version)
	row(tw, "uptime", fmt.Sprintf("%s (pid %d, since %s)", s.Uptime, s.PID, s.Started.Format("2006-01-02 15:04:05Z07:00")))
	row(tw, "state dir", s.StateDir)
	row(tw, "api socket", s.APISocket)
	row(tw, "containerd", okText(s.Containerd))
	row(tw, "gpu", okText(s.GPU))
	row(tw, "pipelines", fmt.Sprint(s.Pipelines))
	if s.Store.DiskTotal > 0 {
		d := fmt.Sprintf("%s free of %s", humanSize(int64(min(s.Store.DiskFree, 1<<62))), humanSize(int64(min(s.Store.DiskTotal, 1<<62)))) //nolint:gosec // clamped
		if s.Ingest.MinFree > 0 {
			d += fmt.Sprintf(" (ingest pauses under %s, disk.min_free)", humanSize(s.Ingest.MinFree))
		}
		row(tw, "disk", d)
	}
	row(tw, "ingest", ingestText(s.Ingest))
	row(tw, "events", fmt.Sprintf("%d (chain head %.16s)", s.Store.EventSeq, s.Store.EventHead))
	row(tw, "systemd", fmt.Sprint(s.Systemd))
	for _, pm := range s.Monitor {
		row(tw, "pipeline "+pm.Pipeline, statusMonitorLine(pm))
	}
	return tw.Flush()
}

// ingestText is the ingest line: running with its counts, or paused with
// why and what to do. Ingest resumes by itself once the cause is gone.
func ingestText(is api.IngestStatus) string {
	if is.Paused == "" {
		return fmt.Sprintf("running (%s since start, %d pending, %d being read)", plural(is.Ingested, "version"), is.Pending, is.Busy)
	}
	fix := "free space on the state disk (kiln gc; kiln doctor shows what uses it)"
	if strings.Contains(is.Paused, "read-only") {
		fix = "remount the state disk read-write (dmesg says why it went read-only)"
	}
	return fmt.Sprintf("paused: %s; %s, and ingest resumes by itself (%d waiting)", is.Paused, fix, is.Pending)
}

func okText(c api.ComponentStatus) string {
	if c.OK {
		return c.Detail
	}
	return "unavailable: " + c.Detail
}

type versionCmd struct{}

func (versionCmd) Run(e *cmdEnv) error {
	cb := clientBuild()
	cb.GoVersion = runtime.Version()
	v, err := e.client().Version(e.ctx)
	if e.json() {
		out := map[string]any{"client": cb, "client_package": pkgVersion}
		if err == nil {
			out["daemon"] = v.Daemon
			out["api_version"] = v.APIVersion
		}
		if werr := writeJSON(e.out, out); werr != nil {
			return werr
		}
		return err
	}
	fmt.Fprintln(e.out, "kiln   "+buildLine(cb, pkgVersion))
	if err != nil {
		return err
	}
	fmt.Fprintf(e.out, "kilnd  %s, API %s\n", buildLine(v.Daemon, ""), v.APIVersion)
	return nil
}

// buildLine names a binary both ways: the package version dpkg and rpm
// show, when it came from a package, and git's version and commit.
func buildLine(b api.BuildInfo, pkg string) string {
	s := "git " + b.Version
	if pkg != "" {
		s = "package " + pkg + ", " + s
	}
	return fmt.Sprintf("%s (commit %s, built %s, %s)", s, orNone(b.Commit), orNone(b.BuildDate), b.GoVersion)
}

func orNone(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

type doctorCmd struct{}

// Run prints one line per check; it fails when any check failed, so scripts
// and install.sh can rely on the exit status.
func (doctorCmd) Run(e *cmdEnv) error {
	d, err := e.client().Doctor(e.ctx)
	if err != nil {
		return err
	}
	failed := 0
	for _, c := range d.Checks {
		if c.Result == api.CheckFail {
			failed++
		}
	}
	if e.json() {
		if err := writeJSON(e.out, d); err != nil {
			return err
		}
	} else if err := printChecks(e.out, d.Checks); err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("%d of %s failed", failed, plural(len(d.Checks), "check"))
	}
	return nil
}

// printChecks prints one line per check, the detail last so that a long
// one pads nothing, and the fix on a line of its own under the detail.
func printChecks(w io.Writer, checks []api.Check) error {
	resultW, nameW := 0, 0
	for _, c := range checks {
		resultW, nameW = max(resultW, len(c.Result)), max(nameW, len(c.Name))
	}
	indent := strings.Repeat(" ", resultW+2+nameW+2)
	var b strings.Builder
	for _, c := range checks {
		fmt.Fprintf(&b, "%-*s  %-*s  %s\n", resultW, strings.ToUpper(c.Result), nameW, c.Name, c.Detail)
		if c.Fix != "" {
			fmt.Fprintf(&b, "%sfix: %s\n", indent, c.Fix)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

type pipelinesCmd struct {
	List     pipelinesListCmd     `cmd:"" default:"1" help:"List loaded pipelines (the default)."`
	Show     pipelinesShowCmd     `cmd:"" help:"Show one loaded pipeline with its defaults applied."`
	Validate pipelinesValidateCmd `cmd:"" help:"Check a spec file without a daemon."`
	Reload   pipelinesReloadCmd   `cmd:"" help:"Load the pipelines folder again; a bad spec leaves the old set running."`
}

type pipelinesListCmd struct{}

func (pipelinesListCmd) Run(e *cmdEnv) error {
	ps, err := e.client().Pipelines(e.ctx)
	if err != nil {
		return err
	}
	if e.json() {
		return writeJSON(e.out, ps)
	}
	tw := table(e.out)
	fmt.Fprintln(tw, "PIPELINE\tSTATE\tLOADED\tDIGEST\tFILE")
	var rejected []api.Pipeline
	for _, p := range ps {
		digest := p.Digest
		if p.State == "rejected" {
			rejected, digest = append(rejected, p), "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.12s\t%s\n", p.Pipeline, p.State, p.Created.Format("2006-01-02 15:04:05"), digest, p.File)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// The errors go below the table: one can be longer than a screen line,
	// and a column would pad every row to it.
	for _, p := range rejected {
		fmt.Fprintf(e.out, "rejected %s: %s (the loaded set keeps running)\n", p.File, p.Error)
	}
	return nil
}

type pipelinesShowCmd struct {
	Name string `arg:"" help:"Pipeline name."`
}

func (c pipelinesShowCmd) Run(e *cmdEnv) error {
	p, err := e.client().Pipeline(e.ctx, c.Name)
	if err != nil {
		return err
	}
	if e.json() {
		return writeJSON(e.out, p)
	}
	fmt.Fprintf(e.out, "pipeline %s (%s)\nfile     %s\ndigest   %s\n", p.Pipeline, p.State, p.File, p.Digest)
	return writeJSON(e.out, p.Spec)
}

type pipelinesValidateCmd struct {
	Files []string `arg:"" type:"path" help:"Spec files to check."`
}

// Run validates locally with the daemon's own decoder, so the answer is the
// same one kilnd would give on reload.
func (c pipelinesValidateCmd) Run(e *cmdEnv) error {
	problems, bad := 0, 0
	results := make([]validateResult, 0, len(c.Files))
	for _, f := range c.Files {
		p, err := config.LoadPipelineFile(f)
		if err != nil {
			// Every problem in the file, FILE:LINE:COL: field: message,
			// one per line, so one edit fixes them all.
			bad++
			lines := strings.Split(err.Error(), "\n")
			problems += len(lines)
			results = append(results, validateResult{File: f, Problems: lines})
			if !e.json() {
				for _, line := range lines {
					fmt.Fprintln(os.Stderr, line)
				}
			}
			continue
		}
		results = append(results, validateResult{File: f, Pipeline: p.Name, OK: true, Problems: []string{}})
		if !e.json() {
			fmt.Fprintf(e.out, "%s: ok (pipeline %s)\n", filepath.Base(f), p.Name)
		}
	}
	if e.json() {
		if err := writeJSON(e.out, results); err != nil {
			return err
		}
	}
	if bad > 0 {
		return fmt.Errorf("%s in %d of %s", plural(problems, "problem"), bad, plural(len(c.Files), "file"))
	}
	return nil
}

// validateResult is one file of `kiln pipelines validate -o json`.
type validateResult struct {
	File     string   `json:"file"`
	Pipeline string   `json:"pipeline,omitempty"`
	OK       bool     `json:"ok"`
	Problems []string `json:"problems"` // FILE:LINE:COL: field: message
}

type pipelinesReloadCmd struct{}

func (pipelinesReloadCmd) Run(e *cmdEnv) error {
	r, err := e.client().ReloadPipelines(e.ctx)
	if err != nil {
		return err
	}
	if e.json() {
		return writeJSON(e.out, r)
	}
	fmt.Fprintf(e.out, "reloaded: added %s, changed %s, removed %s, unchanged %s\n",
		list(r.Added), list(r.Changed), list(r.Removed), list(r.Unchanged))
	return nil
}

func list(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ",")
}

type gpuCmd struct {
	List     gpuListCmd     `cmd:"" default:"1" help:"Show GPUs, health, leases and cordons (the default)."`
	Cordon   gpuCordonCmd   `cmd:"" help:"Keep a GPU from placement (index or UUID)."`
	Uncordon gpuUncordonCmd `cmd:"" help:"Let a cordoned GPU be placed again."`
}

type gpuListCmd struct{}

func (gpuListCmd) Run(e *cmdEnv) error {
	r, err := e.client().GPU(e.ctx)
	if err != nil {
		return err
	}
	return e.printGPU(r)
}

func (e *cmdEnv) printGPU(r api.GPUReport) error {
	if e.json() {
		return writeJSON(e.out, r)
	}
	return printGPUTable(e.out, r)
}

type gpuCordonCmd struct {
	GPU    string `arg:"" name:"gpu" help:"GPU index or UUID."`
	Reason string `help:"Why, for the audit log and kiln gpu." default:"cordoned by an operator"`
}

func (c gpuCordonCmd) Run(e *cmdEnv) error {
	r, err := e.client().CordonGPU(e.ctx, c.GPU, c.Reason)
	if err != nil {
		return err
	}
	return e.printGPU(r)
}

type gpuUncordonCmd struct {
	GPU string `arg:"" name:"gpu" help:"GPU index or UUID."`
}

func (c gpuUncordonCmd) Run(e *cmdEnv) error {
	r, err := e.client().UncordonGPU(e.ctx, c.GPU)
	if err != nil {
		return err
	}
	return e.printGPU(r)
}

type eventsCmd struct {
	Follow bool   `short:"f" help:"Keep printing new events as they happen."`
	Since  uint64 `help:"Start after this sequence number." default:"0"`
	Limit  int    `help:"Most events to list (without -f)." default:"1000"`
}

func (c eventsCmd) Run(e *cmdEnv) error {
	print := func(ev api.Event) error {
		if e.json() {
			b, err := json.Marshal(ev)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(e.out, string(b))
			return err
		}
		_, err := fmt.Fprintf(e.out, "%d\t%s\t%s\t%s\t%s\t%s\n", ev.Seq, ev.Time.Format("2006-01-02 15:04:05.000"),
			ev.Actor, ev.Kind, ev.Pipeline, details(ev))
		return err
	}
	if c.Follow {
		err := e.client().FollowEvents(e.ctx, c.Since, print)
		if e.ctx.Err() != nil {
			return nil // interrupted by the user
		}
		if err == nil {
			return errors.New("kilnd closed the event stream (stopping?)")
		}
		return err
	}
	evs, err := e.client().Events(e.ctx, c.Since, c.Limit)
	if err != nil {
		return err
	}
	if e.json() {
		return writeJSON(e.out, evs)
	}
	for _, ev := range evs {
		if err := print(ev); err != nil {
			return err
		}
	}
	return nil
}

func details(ev api.Event) string {
	var b strings.Builder
	for _, r := range ev.Refs {
		b.WriteString(r + " ")
	}
	keys := make([]string, 0, len(ev.Details))
	for k := range ev.Details {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s ", k, ev.Details[k])
	}
	return strings.TrimSpace(b.String())
}

type backupCmd struct {
	File          string `arg:"" type:"path" help:"Where to write the copy (it is replaced atomically)."`
	NoPredictions bool   `help:"Leave the prediction logs out. Otherwise they go to FILE.predictions.tar: records and indexes, with the inputs kept inline (bodies up to 64 KiB); larger inputs, kept as files, are left out and read back as not kept."`
}

// Run writes the stream to a temp file beside FILE, fsyncs and renames, so a
// cut stream never leaves a half backup under the final name; then the
// prediction logs the same way.
func (c backupCmd) Run(e *cmdEnv) error {
	n, err := writeAtomic(c.File, func(w io.Writer) (int64, error) {
		p := startProgress("received", -1)
		defer p.Finish()
		return e.client().Backup(e.ctx, p.Writer(w))
	})
	if err != nil {
		return fmt.Errorf("backup to %s: %w", c.File, err)
	}
	res := backupResult{File: c.File, Bytes: n}
	if !e.json() {
		fmt.Fprintf(e.out, "wrote %s (%s); back up the blobs folder too: it holds the data the database points at\n", c.File, plural(n, "byte"))
	}
	if c.NoPredictions {
		return jsonOr(e, res, nil)
	}
	pf := c.File + ".predictions.tar"
	n, err = writeAtomic(pf, func(w io.Writer) (int64, error) {
		p := startProgress("received", -1)
		defer p.Finish()
		return e.client().BackupPredictions(e.ctx, p.Writer(w))
	})
	if err != nil {
		return fmt.Errorf("backup prediction logs to %s: %w", pf, err)
	}
	if e.json() {
		res.PredictionsFile, res.PredictionsBytes = pf, n
		return writeJSON(e.out, res)
	}
	fmt.Fprintf(e.out, "wrote %s (%s): the prediction logs, without the inputs kept as files\n", pf, plural(n, "byte"))
	return nil
}

// backupResult is `kiln backup -o json`.
type backupResult struct {
	File             string `json:"file"`
	Bytes            int64  `json:"bytes"`
	PredictionsFile  string `json:"predictions_file,omitempty"`
	PredictionsBytes int64  `json:"predictions_bytes,omitempty"`
}

// writeAtomic writes what fill streams to a temp file beside file, fsyncs
// and renames it over file.
func writeAtomic(file string, fill func(io.Writer) (int64, error)) (int64, error) {
	dir := filepath.Dir(file)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(file)+".tmp-*")
	if err != nil {
		return 0, err
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // best effort; a no-op (ENOENT) after the rename
	n, err := fill(tmp)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), file)
	}
	if err == nil {
		err = syncDir(dir)
	}
	return n, err
}

type gcCmd struct {
	DryRun  bool `help:"Only report what would be removed and which images must be kept."`
	Images  bool `help:"Also delete images that no kept model, unfinished run or loaded pipeline needs."`
	Foreign bool `help:"Also remove containers of another kiln installation (or none) from kiln's containerd namespace, as kiln doctor lists them; kilnd never serves or stops those itself."`
}

func (c gcCmd) Run(e *cmdEnv) error {
	r, err := e.client().GC(e.ctx, c.DryRun, c.Images, c.Foreign)
	if err != nil {
		return err
	}
	if e.json() {
		return writeJSON(e.out, r)
	}
	verb := "removed"
	if r.DryRun {
		verb = "would remove"
	}
	fmt.Fprintf(e.out, "gc %s %s (%s), pruned models %s, expired quarantine %s, %s, images %s; kept %s, %s (%s)\n",
		verb, plural(len(r.DeletedBlobs), "blob"), plural(r.FreedBytes, "byte"), list(r.PrunedModels), list(r.ExpiredQuarantine),
		plural(r.ExpiredRunLogs, "run log"), list(r.RemovedImages), plural(len(r.KeptModels), "model"),
		plural(len(r.KeepImages), "image digest"), r.Took)
	if c.Foreign {
		fmt.Fprintf(e.out, "gc %s foreign containers %s\n", verb, list(r.Foreign))
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer func() { _ = d.Close() }() // read-only handle: Sync's error is the one that counts
	return d.Sync()
}

func table(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0) }

func row(tw *tabwriter.Writer, k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
