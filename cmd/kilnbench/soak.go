package main

import (
	"context"
	"encoding/csv"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kiln-edge/kiln/daemon/apiclient"
)

// The soak is not a BENCH.md figure and takes minutes: it runs only when
// asked for by name (make soak: -only soak).
func init() { register(Group{Name: "soak", Run: benchSoak, OptIn: true}) }

// soakSample is one look at kilnd's resources.
type soakSample struct {
	at                           time.Duration // since the soak's start
	rssMiB, heapMiB, dbMiB       float64       // RSS counts kiln.db's mapped pages too; the heap is Go's alone
	goroutines, fds, readTx, req float64
}

// benchSoak runs kilnd for opt.Soak under everything at once, as a site
// would over weeks: the rollback group's swaps back to back (a good batch
// and a corrupted one dropped, both trained, evaluated and promoted, then
// labelled feedback until kilnd rolls back), a closed-loop load on the
// endpoint, and API polling (status, models, events) from two clients.
// Every 10 s it samples kilnd's RSS, goroutines, open fds and open bbolt
// read transactions; the figures compare the start of the steady state
// (the first three samples after the first swap) with its end (the last
// three), and the curves go to opt.SoakCSV.
func benchSoak(ctx context.Context, opt Options) []Figure {
	const (
		rssName, rssGoal   = "soak.rss_growth_mib", "<= 16"
		heapName, heapGoal = "soak.heap_growth_mib", "<= 8"
		goName, goGoal     = "soak.goroutine_growth", "<= 10"
		fdName, fdGoal     = "soak.fd_growth", "<= 10"
		txName, txGoal     = "soak.open_read_tx_end", "<= 2"
		lostName, lostGoal = "soak.lost", "== 0"
		badName, badGoal   = "soak.non2xx", "== 0"
	)
	fail := func(why string) []Figure {
		var out []Figure
		for _, n := range [][2]string{{rssName, rssGoal}, {heapName, heapGoal}, {goName, goGoal}, {fdName, fdGoal}, {txName, txGoal}, {lostName, lostGoal}, {badName, badGoal}} {
			out = append(out, unmeasured(n[0], "", n[1], why))
		}
		return out
	}
	addr := os.Getenv("KILN_TEST_CONTAINERD")
	switch {
	case addr == "":
		return fail("needs a containerd: run under .ci/with-containerd (make soak does)")
	case os.Geteuid() != 0:
		return fail("needs root for containers")
	}
	kilnd := filepath.Join(opt.Bin, "kilnd")
	data, err := rbLoadData("examples/tabular/data/breast_cancer.csv")
	if err != nil {
		return fail("run from the repository root: " + err.Error())
	}
	l, stop, err := startLoop(ctx, kilnd, addr, "soak", "rb", rbSpec)
	if err != nil {
		return fail(err.Error())
	}
	defer stop()
	root, ns, proc, c := l.root, l.ns, l.proc, l.c
	evs := &rbEvents{}
	sctx, stopAll := context.WithCancel(ctx)
	defer stopAll()
	go evs.follow(sctx, c)
	r := &rbRunner{c: c, evs: evs, data: data, drop: filepath.Join(root, "var/lib/kiln/drop/rb"), addr: addr, ns: ns}
	if err := os.MkdirAll(r.drop, 0o755); err != nil {
		return fail(err.Error())
	}
	if _, err := r.goodModel(sctx, 0); err != nil {
		return fail("the first model: " + err.Error())
	}
	drops := 1

	load := newRBLoad(filepath.Join(root, "run/kiln/serve/rb.sock"), strings.Join(data.rows[0], ",")+"\n", 2)
	load.start()
	var polls, pollErrs atomic.Int64
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { soakPoll(sctx, c, &polls, &pollErrs) })
	}
	t0 := time.Now()
	var samples []soakSample
	var sampleErr error
	var mu sync.Mutex
	wg.Go(func() {
		tick := time.NewTicker(10 * time.Second)
		defer tick.Stop()
		for {
			s, err := soakSampleOf(sctx, c, proc.Process.Pid, filepath.Join(root, "var/lib/kiln/kiln.db"))
			s.at, s.req = time.Since(t0), float64(load.sent.Load())
			mu.Lock()
			if err == nil {
				samples = append(samples, s)
			} else if sampleErr == nil && sctx.Err() == nil {
				sampleErr = err
			}
			mu.Unlock()
			select {
			case <-sctx.Done():
				return
			case <-tick.C:
			}
		}
	})

	swaps, forced, warm := 0, 0, -1
	var runErr error
	for time.Since(t0) < opt.Soak && runErr == nil {
		_, runErr = r.swap(sctx, swaps+1, &forced)
		if runErr == nil {
			swaps++
			drops += 2
			mu.Lock()
			if warm < 0 {
				warm = len(samples) // the steady state starts after one whole swap
			}
			mu.Unlock()
		}
	}
	elapsed := time.Since(t0)
	reqs := load.end()
	stopAll()
	wg.Wait()

	if err := writeSoakCSV(opt.SoakCSV, samples); err != nil {
		return fail(err.Error())
	}
	if warm < 0 || len(samples)-warm < 6 {
		why := fmt.Sprintf("too short a steady state (%d samples after the first swap; run -soak 10m)", len(samples)-max(warm, 0))
		if runErr != nil {
			why += "; " + runErr.Error()
		}
		return fail(why)
	}
	steady := samples[warm:]
	lost, lostDetail := soakLost(ctx, c, r.drop, drops, r.fbFiles)
	common := fmt.Sprintf("%.0f s: %d swaps (%d batches dropped, %d forced promotions), %d feedback files, %d requests on 2 connections, %d API polls (%d failed); samples every 10 s, curves in %s",
		elapsed.Seconds(), swaps, drops, forced, r.fbFiles, len(reqs), polls.Load(), pollErrs.Load(), opt.SoakCSV)
	if runErr != nil {
		common += "; stopped early: " + runErr.Error()
	}
	if sampleErr != nil {
		common += "; a sample failed: " + sampleErr.Error()
	}
	growth := func(name, unit, goal string, get func(soakSample) float64) Figure {
		a, b := soakEnds(steady, get)
		f := measured(name, b-a, unit, goal, fmt.Sprintf("start %.1f, end %.1f, least-squares slope %+.2f %s/h over %d samples; %s",
			a, b, soakSlope(steady, get), unit, len(steady), common))
		f.Pass = f.Pass && runErr == nil
		return f
	}
	_, txEnd := soakEnds(steady, func(s soakSample) float64 { return s.readTx })
	db0, db1 := soakEnds(steady, func(s soakSample) float64 { return s.dbMiB })
	common = fmt.Sprintf("kiln.db %.1f -> %.1f MiB (mapped, so in RSS as read); ", db0, db1) + common
	return []Figure{
		growth(rssName, "MiB", rssGoal, func(s soakSample) float64 { return s.rssMiB }),
		growth(heapName, "MiB", heapGoal, func(s soakSample) float64 { return s.heapMiB }),
		growth(goName, "goroutines", goGoal, func(s soakSample) float64 { return s.goroutines }),
		growth(fdName, "fds", fdGoal, func(s soakSample) float64 { return s.fds }),
		measured(txName, txEnd, "transactions", txGoal, "kiln_store_open_read_tx, median of the last three samples; "+common),
		measured(lostName, float64(lost), "files", lostGoal, lostDetail),
		measured(badName, float64(load.failed.Load()), "responses", badGoal, fmt.Sprintf("%d of %d requests failed or non-2xx across %d rollbacks; first: %s", load.failed.Load(), len(reqs), swaps, load.firstFailure())),
	}
}

// soakPoll reads what an operator's dashboard would, twice a second.
func soakPoll(ctx context.Context, c *apiclient.Client, polls, errs *atomic.Int64) {
	for ctx.Err() == nil {
		_, err1 := c.Status(ctx)
		_, err2 := c.Models(ctx, "rb")
		_, err3 := c.Events(ctx, 0, 50)
		polls.Add(1)
		if (err1 != nil || err2 != nil || err3 != nil) && ctx.Err() == nil {
			errs.Add(1)
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// soakSampleOf reads kilnd's RSS from /proc and the rest from its metrics.
func soakSampleOf(ctx context.Context, c *apiclient.Client, pid int, db string) (soakSample, error) {
	rss, err := procRSS(pid)
	if err != nil {
		return soakSample{}, err
	}
	fi, err := os.Stat(db)
	if err != nil {
		return soakSample{}, err
	}
	text, err := c.Metrics(ctx)
	if err != nil {
		return soakSample{}, err
	}
	s := soakSample{rssMiB: float64(rss) / (1 << 20), dbMiB: float64(fi.Size()) / (1 << 20)}
	want := map[string]*float64{"go_goroutines": &s.goroutines, "process_open_fds": &s.fds, "kiln_store_open_read_tx": &s.readTx,
		"go_memstats_heap_inuse_bytes": &s.heapMiB}
	for _, line := range strings.Split(text, "\n") {
		name, val, ok := strings.Cut(line, " ")
		if p := want[name]; ok && p != nil {
			if *p, err = strconv.ParseFloat(strings.TrimSpace(val), 64); err != nil {
				return s, fmt.Errorf("metrics: %s: %w", name, err)
			}
			delete(want, name)
		}
	}
	if len(want) > 0 {
		return s, fmt.Errorf("metrics lack %d of the series the soak watches (e.g. kiln_store_open_read_tx)", len(want))
	}
	s.heapMiB /= 1 << 20
	return s, nil
}

// soakEnds is the median of the first three and of the last three samples.
func soakEnds(xs []soakSample, get func(soakSample) float64) (start, end float64) {
	var a, b []float64
	for i := range 3 {
		a = append(a, get(xs[i]))
		b = append(b, get(xs[len(xs)-1-i]))
	}
	return median(a), median(b)
}

// soakSlope is the least-squares slope of get over time, per hour.
func soakSlope(xs []soakSample, get func(soakSample) float64) float64 {
	var n, sx, sy, sxx, sxy float64
	for _, s := range xs {
		x, y := s.at.Hours(), get(s)
		n++
		sx, sy, sxx, sxy = sx+x, sy+y, sxx+x*x, sxy+x*y
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}

// soakLost checks nothing was lost or doubled: the drop folder is empty and
// kilnd holds exactly one dataset version per dropped file and one feedback
// version per feedback file (every file is salted, so none is a duplicate).
func soakLost(ctx context.Context, c *apiclient.Client, drop string, drops, feedback int) (int, string) {
	left, _ := os.ReadDir(drop)
	ds, err := c.Datasets(ctx, "rb")
	if err != nil {
		return drops, "datasets: " + err.Error()
	}
	kinds := map[string]int{}
	for _, d := range ds {
		kinds[d.Kind]++
	}
	abs := func(x int) int { return max(x, -x) }
	lost := abs(drops-kinds["data"]) + abs(feedback-kinds["feedback"]) + len(left)
	return lost, fmt.Sprintf("%d batches dropped -> %d data versions; %d feedback files -> %d feedback versions; %d entries left in the drop folder",
		drops, kinds["data"], feedback, kinds["feedback"], len(left))
}

func writeSoakCSV(path string, xs []soakSample) error {
	if path == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	_ = w.Write([]string{"seconds", "rss_mib", "heap_inuse_mib", "kiln_db_mib", "goroutines", "open_fds", "open_read_tx", "requests"})
	for _, s := range xs {
		_ = w.Write([]string{fmt.Sprintf("%.0f", s.at.Seconds()), fmt.Sprintf("%.1f", s.rssMiB), fmt.Sprintf("%.1f", s.heapMiB), fmt.Sprintf("%.1f", s.dbMiB),
			fmt.Sprint(s.goroutines), fmt.Sprint(s.fds), fmt.Sprint(s.readTx), fmt.Sprint(s.req)})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}
