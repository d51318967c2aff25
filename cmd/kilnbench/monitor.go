package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/daemon/apiclient"
	"github.com/kiln-edge/kiln/daemon/serve"
)

func init() { register(Group{Name: "monitor", Run: benchMonitor}) }

// The harness has no -repeat of its own yet, so each monitor figure is the
// median of monRuns runs taken inside the group, min-max in its detail.
const monRuns = 5

// monLogPolicy is monitor.log's default (config.DefaultMonitorLog): 14 days,
// 4 GiB, every input kept. The benchmark logs run under the policy a
// pipeline gets when its spec says nothing.
var monLogPolicy = serve.LogPolicy{Keep: 14 * 24 * time.Hour, MaxBytes: 4 << 30}

// benchMonitor takes BENCH.md's monitor figures: late-label lookups in a
// 1M-prediction log, the endpoint's throughput with the log on against off,
// and a labelled feedback file's way to its live and standby scores.
func benchMonitor(ctx context.Context, opt Options) []Figure {
	var figs []Figure
	figs = append(figs, monJoinLookup(ctx, opt))
	figs = append(figs, monPredLogRatio(ctx, opt))
	figs = append(figs, monFeedbackToScore(ctx, opt))
	return figs
}

// predLogBuild says how a benchmark prediction log was made.
type predLogBuild struct {
	records  int
	bytes    int64
	segments int
	indexes  int
	took     time.Duration
	clients  int
}

func (b predLogBuild) String() string {
	return fmt.Sprintf("%d records (%.0f MB in %d segments, %d with their index on disk) written in %.0f s through a real serve.Endpoint "+
		"(unix socket, %d concurrent HTTP/1.1 keep-alive clients, one 30-feature CSV row per request, inputs kept inline, "+
		"monitor.log defaults, a child-process backend answering one CSV row), 0 dropped",
		b.records, float64(b.bytes)/1e6, b.segments, b.indexes, b.took.Seconds(), b.clients)
}

// short is String for a figure where the log is background.
func (b predLogBuild) short() string {
	return fmt.Sprintf("%d records, %.0f MB in %d segments with %d indexes, written through a real serve.Endpoint (monitor.go)",
		b.records, float64(b.bytes)/1e6, b.segments, b.indexes)
}

// monRow is one feature row of the example data (30 values); request i
// sends it with its first value made unique, so no two bodies are equal.
const monRow = "17.99,10.38,122.8,1001,0.1184,0.2776,0.3001,0.1471,0.2419,0.07871,1.095,0.9053,8.589,153.4,0.006399," +
	"0.04904,0.05373,0.01587,0.03003,0.006193,25.38,17.33,184.6,2019,0.1622,0.6656,0.7119,0.2654,0.4601,0.1189\n"

// writePredLog fills predLogDir/<pipeline>/ with n records through the
// product's own write path: a serve.Endpoint on a unix socket with its
// prediction log on, driven by concurrent clients, then shut down (which
// flushes, closes the last segment and writes its index). Each record is
// a real answered request; nothing is written around the endpoint.
func writePredLog(ctx context.Context, scratch, predLogDir, pipeline string, n int) (predLogBuild, error) {
	const clients = 16
	out := predLogBuild{records: n, clients: clients}
	b, err := svStartBackend(scratch, pipeline+"/m1")
	if err != nil {
		return out, err
	}
	defer b.stop()
	e, err := serve.New(serve.Options{Pipeline: pipeline, PredLogDir: predLogDir, Protocol: "sagemaker",
		LogPolicy: monLogPolicy, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		return out, err
	}
	sock := filepath.Join(scratch, pipeline+"-ep.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		_ = e.Shutdown(ctx)
		return out, err
	}
	go func() { _ = e.Serve(l) }() // returns ErrClosed at Shutdown
	e.Flip(b)

	t0 := time.Now()
	var next atomic.Int64
	errs := make(chan error, clients)
	for range clients {
		go func() { errs <- monClient(ctx, sock, &next, int64(n)) }()
	}
	var cerr error
	for range clients {
		cerr = errors.Join(cerr, <-errs)
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	serr := e.Shutdown(sctx)
	cancel()
	out.took = time.Since(t0)
	if err := errors.Join(cerr, serr); err != nil {
		return out, err
	}
	st := e.Stats()
	if st.LogWritten != uint64(n) || st.LogDropped != 0 || st.LogErrors != 0 || st.LogInputsSkipped != 0 { //nolint:gosec // n > 0
		return out, fmt.Errorf("prediction log: %d records written for %d requests (%d dropped, %d errors, %d inputs skipped)",
			st.LogWritten, n, st.LogDropped, st.LogErrors, st.LogInputsSkipped)
	}
	ents, err := os.ReadDir(filepath.Join(predLogDir, pipeline))
	if err != nil {
		return out, err
	}
	for _, de := range ents {
		fi, err := de.Info()
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		out.bytes += fi.Size()
		switch filepath.Ext(de.Name()) {
		case ".idx":
			out.indexes++
		case ".seg":
			out.segments++
		}
	}
	return out, nil
}

// monClient sends requests over one keep-alive connection until next
// passes n, and checks each answer.
func monClient(ctx context.Context, sock string, next *atomic.Int64, n int64) error {
	c, err := net.Dial("unix", sock)
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }() // the requests are answered; nothing left to flush
	br := bufio.NewReaderSize(c, 4096)
	var body, req []byte
	for {
		i := next.Add(1)
		if i > n {
			return nil
		}
		if i%1024 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		// The first feature made unique per request: 17.99 -> 17.99 + i/1e7.
		body = strconv.AppendFloat(body[:0], 17.99+float64(i)/1e7, 'f', 7, 64)
		body = append(body, monRow[strings.IndexByte(monRow, ','):]...)
		req = append(req[:0], "POST /invocations HTTP/1.1\r\nHost: kiln\r\nContent-Type: text/csv\r\nContent-Length: "...)
		req = strconv.AppendInt(req, int64(len(body)), 10)
		req = append(req, "\r\n\r\n"...)
		req = append(req, body...)
		if _, err := c.Write(req); err != nil {
			return err
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close() // fully read above
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("endpoint answered %s", resp.Status)
		}
	}
}

// monJoinLookup is monitor.join_lookup_per_s: late labels are joined by
// looking their request id up in the log; this times that lookup, not the
// replay of the found inputs through the standby.
func monJoinLookup(ctx context.Context, opt Options) Figure {
	const name, unit, goal = "monitor.join_lookup_per_s", "labels/s", ">= 100000"
	fail := func(why string) Figure { return unmeasured(name, unit, goal, why) }
	n, warm, per := 1_000_000, 100_000, 200_000
	if opt.Quick {
		n, warm, per = 50_000, 10_000, 20_000
	}
	scratch, err := os.MkdirTemp("/var/tmp", "kbm")
	if err != nil {
		return fail(err.Error())
	}
	defer func() { _ = os.RemoveAll(scratch) }() // best-effort cleanup of scratch files
	predDir := filepath.Join(scratch, "predictions")
	build, err := writePredLog(ctx, scratch, predDir, "bench", n)
	if err != nil {
		return fail("write the prediction log: " + err.Error())
	}
	r, err := serve.OpenLogReader(predDir, "bench")
	if err != nil {
		return fail(err.Error())
	}
	defer func() { _ = r.Close() }() // read-only
	// The ids a client got back in X-Kiln-Request-Id, read from the log.
	ids := make([]string, 0, n)
	if err := r.Scan(time.Time{}, func(rec serve.Record) error {
		if !rec.InputKept {
			return fmt.Errorf("record %s kept no input", rec.ID)
		}
		ids = append(ids, rec.ID)
		return nil
	}); err != nil {
		return fail("scan the log: " + err.Error())
	}
	if len(ids) != n {
		return fail(fmt.Sprintf("the log holds %d records, want %d", len(ids), n))
	}
	// 90% ids that are in the log, 10% that are not (expired, or never
	// logged); the answer to each is checked.
	rng := rand.New(rand.NewPCG(11, 0))
	queries := func(k int) ([]string, []bool) {
		qs, in := make([]string, k), make([]bool, k)
		for i := range qs {
			if rng.IntN(10) == 0 {
				qs[i] = "absent-" + strconv.FormatUint(rng.Uint64(), 36)
			} else {
				qs[i], in[i] = ids[rng.IntN(len(ids))], true
			}
		}
		return qs, in
	}
	lookup := func(qs []string, in []bool) (time.Duration, error) {
		t0 := time.Now()
		for i, q := range qs {
			rec, err := r.Lookup(q)
			switch {
			case in[i] && err != nil:
				return 0, fmt.Errorf("lookup %s: %w", q, err)
			case in[i] && (rec.ID != q || len(rec.Input) == 0):
				return 0, fmt.Errorf("lookup %s found record %s (input %d bytes)", q, rec.ID, len(rec.Input))
			case !in[i] && !errors.Is(err, serve.ErrNotFound):
				return 0, fmt.Errorf("lookup of absent %s: got %v, want not found", q, err)
			}
		}
		return time.Since(t0), nil
	}
	if _, err := lookup(queries(warm)); err != nil {
		return fail(err.Error())
	}
	var rates []float64
	stopProf := monProfile("lookup")
	defer stopProf()
	for range monRuns {
		if ctx.Err() != nil {
			return fail("interrupted")
		}
		qs, in := queries(per)
		d, err := lookup(qs, in)
		if err != nil {
			return fail(err.Error())
		}
		rates = append(rates, float64(per)/d.Seconds())
	}
	return measured(name, median(rates), unit, goal, fmt.Sprintf(
		"median of %d runs of %d serve.LogReader.Lookup calls, single goroutine (%s labels/s; min %.0f, max %.0f), "+
			"90%% ids in the log at random, 10%% absent, every answer checked, after %d warm-up lookups, page cache warm; "+
			"log: %s; the replay of the found inputs through the standby is not included",
		monRuns, per, fmtRates(rates), slices.Min(rates), slices.Max(rates), warm, build))
}

// monProfile starts a CPU profile into $KILNBENCH_PROFILE/name.pprof when
// that variable names a folder (to see where a missed goal's time goes);
// the returned stop is a no-op otherwise.
func monProfile(name string) (stop func()) {
	dir := os.Getenv("KILNBENCH_PROFILE")
	if dir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(dir, name+".pprof"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "kilnbench: profile: "+err.Error())
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintln(os.Stderr, "kilnbench: profile: "+err.Error())
		_ = f.Close()
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close() // a profile is a debugging aid; a short one is still readable
	}
}

func fmtRates(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.0fk", x/1e3)
	}
	return strings.Join(parts, " ")
}

// monPredLogRatio is monitor.predlog_throughput_ratio: one endpoint with
// the log on (keeping every input) and one with it off, in front of the
// same backend, loaded in turn by wrk with the same body.
func monPredLogRatio(ctx context.Context, opt Options) Figure {
	const name, unit, goal = "monitor.predlog_throughput_ratio", "x", ">= 0.9"
	fail := func(why string) Figure { return unmeasured(name, unit, goal, why) }
	if _, err := exec.LookPath("wrk"); err != nil {
		return fail("no wrk (make deps installs it)")
	}
	rounds, dur := monRuns, 5*time.Second
	if opt.Quick {
		rounds, dur = 2, time.Second
	}
	scratch, err := os.MkdirTemp("/var/tmp", "kbp")
	if err != nil {
		return fail(err.Error())
	}
	defer func() { _ = os.RemoveAll(scratch) }() // best-effort cleanup of scratch files
	b, err := svStartBackend(scratch, "bench/m1")
	if err != nil {
		return fail(err.Error())
	}
	defer b.stop()
	on, onAddr, err := monEndpoint(filepath.Join(scratch, "predictions"), b)
	if err != nil {
		return fail(err.Error())
	}
	defer svShutdown(ctx, on)
	off, offAddr, err := monEndpoint("", b)
	if err != nil {
		return fail(err.Error())
	}
	defer svShutdown(ctx, off)

	type side struct {
		name, url string
	}
	sides := []side{{"on", "http://" + onAddr + "/invocations"}, {"off", "http://" + offAddr + "/invocations"}}
	var (
		ratios []float64
		parts  []string
		bad    int64
	)
	for _, size := range []int{1 << 10, 64 << 10} {
		script := filepath.Join(scratch, fmt.Sprintf("post-%d.lua", size))
		// 16-byte rows: the body is exactly size bytes of CSV.
		lua := fmt.Sprintf("wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"text/csv\"\nwrk.body = string.rep(%q, %d)\n",
			"5.1,3.5,1.4,0.2\n", size/16)
		if err := os.WriteFile(script, []byte(lua), 0o644); err != nil { //nolint:gosec // G703: a fixed name under the scratch folder MkdirTemp just made
			return fail(err.Error())
		}
		for _, s := range sides { // warm both paths once
			if _, err := svWrk(ctx, script, s.url, 32, time.Second); err != nil {
				return fail(s.name + ": " + err.Error())
			}
		}
		before := on.Stats()
		rps := map[string][]float64{}
		for r := range rounds {
			for i := range sides {
				s := sides[(i+r)%len(sides)] // alternate which side goes first
				stopProf := func() {}
				if r == 0 {
					stopProf = monProfile(fmt.Sprintf("predlog-%s-%dk", s.name, size>>10))
				}
				res, err := svWrk(ctx, script, s.url, 32, dur)
				stopProf()
				if err != nil {
					return fail(s.name + ": " + err.Error())
				}
				rps[s.name] = append(rps[s.name], res.rps)
				bad += res.non2xx
			}
		}
		if err := on.FlushLog(ctx); err != nil {
			return fail("flush the prediction log: " + err.Error())
		}
		after := on.Stats()
		written := after.LogWritten - before.LogWritten
		dropped := after.LogDropped - before.LogDropped
		noInput := after.LogInputsSkipped - before.LogInputsSkipped
		// Requests whose record (or input) the log dropped were served
		// without the log keeping them: they do not count for the on side.
		kept := 1.0
		if total := written + dropped; total > 0 {
			kept = float64(written-noInput) / float64(total)
		}
		raw := median(rps["on"]) / median(rps["off"])
		ratio := raw * kept
		ratios = append(ratios, ratio)
		parts = append(parts, fmt.Sprintf("%d KiB bodies %.3f (log on %s rps, off %s; raw rps ratio %.3f x %.4f of records kept with their input: "+
			"%d written, %d dropped, %d without input)",
			size>>10, ratio, fmtRates(rps["on"]), fmtRates(rps["off"]), raw, kept, written, dropped, noInput))
	}
	f := measured(name, slices.Min(ratios), unit, goal, fmt.Sprintf(
		"lower of: %s; each = median rps on / median rps off x the fraction of the on side's requests whose record was kept with its input; medians of %d rounds of wrk -t1 -c32 %ds per side, order alternated each round, same child-process backend, "+
			"log on = monitor.log defaults keeping every input (64 KiB bodies inline); non-2xx/socket errors %d",
		strings.Join(parts, "; "), rounds, int(dur/time.Second), bad))
	if bad > 0 {
		f.Pass = false
		f.Detail += "; not passed: requests failed"
	}
	return f
}

// monEndpoint runs an endpoint on a TCP port, with the log in predDir
// ("" for none), flipped to b.
func monEndpoint(predDir string, b serve.Backend) (*serve.Endpoint, string, error) {
	o := serve.Options{Pipeline: "bench", PredLogDir: predDir, Protocol: "sagemaker", LogPolicy: monLogPolicy,
		Log: slog.New(slog.DiscardHandler)}
	e, err := serve.New(o)
	if err != nil {
		return nil, "", err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	go func() { _ = e.Serve(l) }() // returns ErrClosed at Shutdown
	e.Flip(b)
	return e, l.Addr().String(), nil
}

// monSpec is the example pipeline with its label set declared (as the
// kilnd monitor test has it) and a gate a second model may fail.
const monSpec = `name: bench
data: {format: csv, label: diagnosis, settle: 0s, validate: {labels: [benign, malignant]}}
train:
  image: kiln.local/tabular-trainer:1
  resources: {memory: 512Mi, cpus: 1}
  timeout: 5m
serve:
  image: kiln.local/tabular-server:1
  resources: {memory: 256Mi}
evaluate:
  holdout: {fraction: 0.2, seed: 1}
  gate: {min: 0.9}
triggers: {new_data: {debounce: 0s, min_rows: 1}}
`

// monFeedbackToScore is monitor.feedback_to_score_s: kilnd with a live model
// and a warm standby; a labelled feedback CSV renamed into feedback/<p>/
// until the feedback.scored event of its version, with both models' rows.
func monFeedbackToScore(ctx context.Context, opt Options) Figure {
	const name, unit, goal = "monitor.feedback_to_score_s", "s", "<= 2"
	fail := func(why string) Figure { return unmeasured(name, unit, goal, why) }
	addr := os.Getenv("KILN_TEST_CONTAINERD")
	if addr == "" {
		return fail("needs a containerd: run under .ci/with-containerd (make bench does)")
	}
	if os.Geteuid() != 0 {
		return fail("needs root for containers")
	}
	kilnd := filepath.Join(opt.Bin, "kilnd")
	if _, err := os.Stat(kilnd); err != nil {
		return fail("no " + kilnd + " (run make build)")
	}
	raw, err := os.ReadFile("examples/tabular/data/breast_cancer.csv")
	if err != nil {
		return fail("run from the repository root: " + err.Error())
	}
	recs, err := csv.NewReader(strings.NewReader(string(raw))).ReadAll()
	if err != nil || len(recs) < 2 {
		return fail(fmt.Sprintf("examples/tabular/data/breast_cancer.csv: %v", err))
	}
	l, stop, err := startLoop(ctx, kilnd, addr, "mon", "bench", monSpec)
	if err != nil {
		return fail(err.Error())
	}
	defer stop()
	root, c := l.root, l.c
	logHint := func() string {
		b, _ := os.ReadFile(filepath.Join(root, "kilnd.log"))
		return "; kilnd: " + lastLine(string(b))
	}
	if err := monLiveAndStandby(ctx, c, root, "bench", raw); err != nil {
		return fail(err.Error() + logHint())
	}

	fbDir := filepath.Join(root, "var/lib/kiln/feedback/bench")
	if err := os.MkdirAll(fbDir, 0o755); err != nil {
		return fail(err.Error())
	}
	header, rows := recs[0], recs[1:]
	runs := monRuns
	var secs []float64
	var notes []string
	for r := range runs {
		text := monFeedbackCSV(header, rows, r, 1000)
		tmp := filepath.Join(fbDir, fmt.Sprintf(".fb%d.part", r))
		if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil { //nolint:gosec // G703: a fixed name under the scratch folder
			return fail(err.Error())
		}
		took, note, err := monTimeScore(ctx, c, func() error { return os.Rename(tmp, filepath.Join(fbDir, fmt.Sprintf("fb%d.csv", r))) })
		if err != nil {
			return fail(fmt.Sprintf("run %d: %v%s", r+1, err, logHint()))
		}
		secs = append(secs, took.Seconds())
		notes = append(notes, note)
	}
	parts := make([]string, len(secs))
	for i, s := range secs {
		parts[i] = fmt.Sprintf("%.2f", s)
	}
	return measured(name, median(secs), unit, goal, fmt.Sprintf(
		"median of %d fresh 1,000-row labelled CSVs (example rows with values perturbed, so no model trained on them) renamed into feedback/bench/ "+
			"until the client saw the version's feedback.scored event (events -f): %s s (min %.2f, max %.2f); live model and warm standby "+
			"from the example pipeline, CPU-only; per run from the rename: %s",
		runs, strings.Join(parts, " "), slices.Min(secs), slices.Max(secs), strings.Join(notes, "; ")))
}

// monLiveAndStandby brings pipeline p to a live model and a warm standby:
// the example data trains m1; a second run trains m2, promoted by force when
// the gate rejects it, and m1 stays warm as the standby.
func monLiveAndStandby(ctx context.Context, c *apiclient.Client, root, p string, data []byte) error {
	drop := filepath.Join(root, "var/lib/kiln/drop", p)
	if err := os.MkdirAll(drop, 0o755); err != nil {
		return err
	}
	tmp := filepath.Join(drop, ".d.part")
	if err := os.WriteFile(tmp, data, 0o644); err != nil { //nolint:gosec // G703: a fixed name under the scratch folder
		return err
	}
	if err := os.Rename(tmp, filepath.Join(drop, "d.csv")); err != nil {
		return err
	}
	state := func(id string) string {
		ms, err := c.Models(ctx, p)
		if err != nil {
			return ""
		}
		for _, m := range ms {
			if m.ID == id {
				return m.State
			}
		}
		return ""
	}
	wait := func(what string, d time.Duration, ok func() bool) error {
		for deadline := time.Now().Add(d); !ok(); {
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("%s: not within %s", what, d)
			}
			time.Sleep(200 * time.Millisecond)
		}
		return nil
	}
	if err := wait(p+"/m1 live", 5*time.Minute, func() bool { return state(p+"/m1") == "live" }); err != nil {
		return err
	}
	if _, err := c.Train(ctx, p); err != nil {
		return fmt.Errorf("start a second run: %w", err)
	}
	if err := wait(p+"/m2 evaluated", 5*time.Minute, func() bool {
		s := state(p + "/m2")
		return s == "live" || s == "rejected"
	}); err != nil {
		return err
	}
	if state(p+"/m2") == "rejected" {
		if _, err := c.Promote(ctx, p+"/m2", true); err != nil {
			return fmt.Errorf("promote --force %s/m2: %w", p, err)
		}
	}
	return wait(p+"/m2 live, "+p+"/m1 standby", 2*time.Minute, func() bool {
		return state(p+"/m2") == "live" && state(p+"/m1") == "standby"
	})
}

// monFeedbackCSV is n labelled rows for run r: example rows (with their true
// labels) whose first value is nudged by a factor unique to (r, row), so
// each file is new to ingest and no row is one a model trained on.
func monFeedbackCSV(header []string, rows [][]string, r, n int) string {
	var sb strings.Builder
	w := csv.NewWriter(&sb)
	_ = w.Write(header) // a strings.Builder does not fail
	for j := range n {
		row := slices.Clone(rows[j%len(rows)])
		v, _ := strconv.ParseFloat(row[0], 64)
		row[0] = strconv.FormatFloat(v*(1+float64(r*n+j+1)*1e-6), 'g', -1, 64)
		_ = w.Write(row)
	}
	w.Flush()
	return sb.String()
}

// monTimeScore follows the event stream, runs rename, and times it to the
// feedback.scored event of the feedback version ingest made of the file.
func monTimeScore(ctx context.Context, c *apiclient.Client, rename func() error) (time.Duration, string, error) {
	seq, err := lastSeq(ctx, c)
	if err != nil {
		return 0, "", err
	}
	fctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	evs := make(chan api.Event, 64)
	done := make(chan error, 1)
	go func() {
		done <- c.FollowEvents(fctx, seq+1, func(e api.Event) error {
			select {
			case evs <- e:
				return nil
			case <-fctx.Done():
				return fctx.Err()
			}
		})
	}()
	t0 := time.Now()
	if err := rename(); err != nil {
		return 0, "", err
	}
	var version string
	var accepted time.Duration
	for {
		select {
		case e := <-evs:
			switch {
			case e.Kind == "dataset.quarantined" && e.Pipeline == "bench":
				return 0, "", fmt.Errorf("feedback quarantined: %v", e.Details)
			case e.Kind == "dataset.accepted" && e.Details["kind"] == "feedback" && version == "" && len(e.Refs) > 0:
				version, accepted = e.Refs[0], e.Time.Sub(t0)
			case e.Kind == "feedback.scored" && version != "" && len(e.Refs) > 0 && e.Refs[0] == version:
				took := time.Since(t0)
				d := e.Details
				if d["live_rows"] != "1000" || d["standby_rows"] != "1000" {
					return 0, "", fmt.Errorf("%s scored with live_rows %q standby_rows %q, want 1000 each: %v",
						version, d["live_rows"], d["standby_rows"], d)
				}
				return took, fmt.Sprintf("%.2f s (accepted +%.2f s, scored event +%.2f s; live %s acc %s, standby %s acc %s, 1000 rows each)",
					took.Seconds(), accepted.Seconds(), e.Time.Sub(t0).Seconds(),
					d["live_model"], d["live_accuracy"], d["standby_model"], d["standby_accuracy"]), nil
			}
		case err := <-done:
			if err == nil {
				err = errors.New("the event stream ended")
			}
			if version == "" {
				return 0, "", fmt.Errorf("no feedback version accepted: %w", err)
			}
			return 0, "", fmt.Errorf("%s not scored: %w", version, err)
		}
	}
}
