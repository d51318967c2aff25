package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kiln-edge/kiln/storage"
)

func init() { register(Group{Name: "storage", Run: benchStorage}) }

// The lineage graph: per pipeline, datasets arrive one a day; every run
// trains on a sliding window of the last `window` datasets on a leased GPU
// and produces a model; every fifth model is deployed, replacing the
// previous deployment. A model's ancestry is then its run, the run's GPU and
// the window: window+2 nodes (250 for the full graph).
type stGraph struct {
	pipelines, runs, window int
}

func benchStorage(ctx context.Context, opt Options) []Figure {
	shape := stGraph{pipelines: 16, runs: 250, window: 248}
	rounds, perRound, repeat := 10, 20, 100
	eventsFor, commits := 3*time.Second, 2000
	note, runNote := "", ""
	if opt.Quick {
		shape = stGraph{pipelines: 4, runs: 60, window: 248}
		rounds, perRound, repeat = 4, 10, 20
		eventsFor, commits = time.Second, 300
		note, runNote = ", smaller graph for -quick", ", shorter run for -quick"
	}
	root, err := os.MkdirTemp("/var/tmp", "kilnbench-storage-")
	if err != nil {
		why := "temp dir under /var/tmp: " + err.Error()
		return []Figure{
			unmeasured("storage.ancestors_speedup", "x", ">= 4", why),
			unmeasured("storage.ancestors_p99_ms", "ms", "<= 0.5", why),
			unmeasured("storage.events_per_s", "events/s", ">= 50000", why),
			unmeasured("storage.commit_p99_ms", "ms", "<= 2", why),
		}
	}
	defer func() { _ = os.RemoveAll(root) }() // best-effort cleanup of scratch data
	figs := stBenchAncestors(ctx, filepath.Join(root, "lineage"), shape, rounds, perRound, repeat, note)
	figs = append(figs, stBenchEvents(ctx, filepath.Join(root, "events"), eventsFor, runNote))
	figs = append(figs, stBenchCommit(ctx, filepath.Join(root, "commit"), commits, runNote))
	return figs
}

// stBuildGraph writes the graph through the record API: one goroutine per
// pipeline, one update per run (group commit merges them), as the daemon
// would write it. It returns the models to query.
func stBuildGraph(ctx context.Context, s *storage.Store, g stGraph) ([]string, error) {
	var mu sync.Mutex
	var models []string
	errs := make([]error, g.pipelines)
	var wg sync.WaitGroup
	for p := range g.pipelines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pipe := fmt.Sprintf("p%d", p)
			var ds []string
			for len(ds) < g.runs+g.window-1 && errs[p] == nil {
				errs[p] = s.Update(ctx, func(tx *storage.Tx) error {
					for range min(100, g.runs+g.window-1-len(ds)) {
						d, err := tx.CreateDataset(storage.Dataset{Pipeline: pipe, Kind: storage.KindData, State: storage.DatasetAccepted, Rows: 1000})
						if err != nil {
							return err
						}
						ds = append(ds, d.ID)
					}
					return nil
				})
			}
			prevDeploy := ""
			for r := 0; r < g.runs && errs[p] == nil; r++ {
				errs[p] = s.Update(ctx, func(tx *storage.Tx) error {
					run, err := tx.CreateRun(storage.Run{Pipeline: pipe, State: storage.RunSucceeded, Datasets: ds[r : r+g.window],
						GPU: fmt.Sprintf("GPU-%08x", r%4), Image: "sha256:" + strings.Repeat("ab", 32)})
					if err != nil {
						return err
					}
					m, err := tx.CreateModel(storage.Model{Pipeline: pipe, Run: run.ID, State: storage.ModelRetired})
					if err != nil {
						return err
					}
					mu.Lock()
					models = append(models, m.ID)
					mu.Unlock()
					if r%5 == 4 {
						d, err := tx.CreateDeployment(storage.Deployment{Pipeline: pipe, Model: m.ID, Previous: prevDeploy, State: storage.DeployEnded})
						if err != nil {
							return err
						}
						prevDeploy = d.ID
					}
					return nil
				})
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	slices.Sort(models)
	return models, nil
}

// stDumpEdges writes kiln's lineage/up index as CSV (child,parent,type): the
// very graph kiln answers from, for sqlite3 to load.
func stDumpEdges(s *storage.Store, path string) (n int, err error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer func() {
		// sqlite3 loads this file next: a failed close means a short file.
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	w := csv.NewWriter(bufio.NewWriterSize(f, 1<<20))
	err = s.View(func(tx *storage.Tx) error {
		return tx.Bolt().Bucket([]byte("lineage")).Bucket([]byte("up")).ForEach(func(k, v []byte) error {
			child, parent, _ := bytes.Cut(k, []byte{0})
			n++
			return w.Write([]string{string(child), string(parent), string(v)})
		})
	})
	if err != nil {
		return n, err
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return n, err
	}
	return n, nil
}

var stRunTimeRE = regexp.MustCompile(`Run Time: real ([0-9.]+)`)

// stSqliteAncestors times, in one sqlite3 process, the recursive ancestors
// query of each model, repeated `repeat` times inside one statement (the
// shell's timer has millisecond resolution), after one untimed warm-up pass.
// It returns per-query seconds (statement time / repeat) and the counts.
func stSqliteAncestors(ctx context.Context, db string, models []string, repeat int) ([]float64, []int, error) {
	var sql strings.Builder
	sql.WriteString("CREATE TEMP TABLE rep(id TEXT);\n")
	q := func(id string, n int) string {
		return fmt.Sprintf("DELETE FROM rep; WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i<%d) INSERT INTO rep SELECT '%s' FROM c;\n"+
			".timer on\n"+
			"SELECT sum((WITH RECURSIVE anc(x) AS (SELECT rep.id UNION SELECT e.parent FROM edges e JOIN anc ON e.child = anc.x) SELECT count(*) - 1 FROM anc)) / %d FROM rep;\n"+
			".timer off\n", n, id, n)
	}
	for _, m := range models { // warm-up: sqlite's page cache starts cold in each process
		sql.WriteString(strings.ReplaceAll(q(m, 1), ".timer on\n", ""))
	}
	for _, m := range models {
		sql.WriteString(q(m, repeat))
	}
	cmd := exec.CommandContext(ctx, "sqlite3", "-batch", db)
	cmd.Stdin = strings.NewReader(sql.String())
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, nil, fmt.Errorf("sqlite3: %v: %s", err, out)
	}
	var secs []float64
	var counts []int
	for line := range strings.SplitSeq(string(out), "\n") {
		if m := stRunTimeRE.FindStringSubmatch(line); m != nil {
			v, _ := strconv.ParseFloat(m[1], 64)
			secs = append(secs, v/float64(repeat))
		} else if n, err := strconv.Atoi(strings.TrimSpace(line)); err == nil {
			counts = append(counts, n)
		}
	}
	counts = counts[len(models):] // drop the warm-up answers
	if len(secs) != len(models) || len(counts) != len(models) {
		return nil, nil, fmt.Errorf("sqlite3: parsed %d timings and %d counts for %d queries: %.300s", len(secs), len(counts), len(models), out)
	}
	return secs, counts, nil
}

func stBenchAncestors(ctx context.Context, dir string, g stGraph, rounds, perRound, repeat int, note string) []Figure {
	const speedup, p99 = "storage.ancestors_speedup", "storage.ancestors_p99_ms"
	fail := func(why string) []Figure {
		return []Figure{unmeasured(speedup, "x", ">= 4", why), unmeasured(p99, "ms", "<= 0.5", why)}
	}
	s, err := storage.Open(dir, storage.Options{})
	if err != nil {
		return fail(err.Error())
	}
	defer func() { _ = s.Close() }() // scratch store, writes already committed: a close error changes no figure
	t0 := time.Now()
	models, err := stBuildGraph(ctx, s, g)
	if err != nil {
		return fail("build graph: " + err.Error())
	}
	buildKiln := time.Since(t0)
	nEdges, err := stDumpEdges(s, filepath.Join(dir, "edges.csv"))
	if err != nil {
		return fail("dump edges: " + err.Error())
	}
	_, sqliteErr := exec.LookPath("sqlite3")
	sqliteDB := filepath.Join(dir, "lineage.sqlite")
	if sqliteErr == nil {
		load := "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;\n" +
			"CREATE TABLE edges(child TEXT NOT NULL, parent TEXT NOT NULL, type TEXT NOT NULL, PRIMARY KEY(child, parent)) WITHOUT ROWID;\n" +
			".mode csv\n.import " + filepath.Join(dir, "edges.csv") + " edges\nANALYZE;\n"
		cmd := exec.CommandContext(ctx, "sqlite3", "-batch", sqliteDB)
		cmd.Stdin = strings.NewReader(load)
		if out, err := cmd.CombinedOutput(); err != nil {
			sqliteErr = fmt.Errorf("load sqlite3: %v: %s", err, out)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2)) //nolint:gosec // fixed seed on purpose: the same query sample every run; nothing secret
	var kilnMS, sqlMS []float64
	ancestry := 0
	for r := range rounds {
		batch := make([]string, perRound)
		for i := range batch {
			batch[i] = models[rng.IntN(len(models))]
		}
		// Alternate which side goes first each round.
		kilnSide := func() error {
			for _, m := range batch {
				start := time.Now()
				anc, err := s.Ancestors(m, 0)
				el := time.Since(start)
				if err != nil {
					return err
				}
				kilnMS = append(kilnMS, float64(el.Nanoseconds())/1e6)
				ancestry = len(anc)
			}
			return nil
		}
		sqlSide := func() error {
			if sqliteErr != nil {
				return nil
			}
			secs, counts, err := stSqliteAncestors(ctx, sqliteDB, batch, repeat)
			if err != nil {
				return err
			}
			for i, m := range batch {
				anc, _ := s.Ancestors(m, 0)
				if counts[i] != len(anc) {
					return fmt.Errorf("sqlite3 finds %d ancestors of %s, kiln %d", counts[i], m, len(anc))
				}
				sqlMS = append(sqlMS, secs[i]*1e3)
			}
			return nil
		}
		sides := []func() error{kilnSide, sqlSide}
		if r%2 == 1 {
			sides[0], sides[1] = sides[1], sides[0]
		}
		for _, side := range sides {
			if err := side(); err != nil {
				return fail(err.Error())
			}
		}
	}
	kMed, kP99 := stQuantile(kilnMS, 0.5), stQuantile(kilnMS, 0.99)
	graph := fmt.Sprintf("%.2fM edges (%d pipelines x %d runs, window %d; kiln built it in %.1fs), ancestry %d nodes%s",
		float64(nEdges)/1e6, g.pipelines, g.runs, g.window, buildKiln.Seconds(), ancestry, note)
	figs := []Figure{}
	if sqliteErr != nil {
		figs = append(figs, unmeasured(speedup, "x", ">= 4", "sqlite3 baseline unavailable: "+sqliteErr.Error()))
	} else {
		sMed := stQuantile(sqlMS, 0.5)
		figs = append(figs, measured(speedup, stRound(sMed/kMed, 2), "x", ">= 4",
			fmt.Sprintf("kiln %.3f ms vs sqlite3 WITH RECURSIVE %.3f ms (medians; kiln one query each, sqlite3 mean of %d in one statement, warm cache, WITHOUT ROWID PK(child,parent)), %s, %d queries alternating in %d rounds",
				kMed, sMed, repeat, graph, len(kilnMS), rounds)))
	}
	figs = append(figs, measured(p99, stRound(kP99, 3), "ms", "<= 0.5",
		fmt.Sprintf("p99 of %d queries (p50 %.3f ms), %s", len(kilnMS), kMed, graph)))
	return figs
}

func stBenchEvents(ctx context.Context, dir string, d time.Duration, note string) Figure {
	const name = "storage.events_per_s"
	s, err := storage.Open(dir, storage.Options{})
	if err != nil {
		return unmeasured(name, "events/s", ">= 50000", err.Error())
	}
	defer func() { _ = s.Close() }() // scratch store, writes already committed: a close error changes no figure
	const writers, inflight = 8, 64
	var acked atomic.Int64
	var firstErr atomic.Value
	runCtx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	for w := range writers {
		for range inflight {
			wg.Add(1)
			go func() {
				defer wg.Done()
				details := map[string]string{"writer": strconv.Itoa(w), "rows": "1000"}
				for runCtx.Err() == nil {
					// Not runCtx: an append already in flight when the run's time is up
					// must finish, not fail; the loop condition ends the run.
					_, err := s.Append(context.WithoutCancel(ctx), storage.Event{Kind: "dataset.accepted", Pipeline: "bench", Refs: []string{"bench/d1"}, Details: details})
					if err != nil {
						firstErr.CompareAndSwap(nil, err)
						return
					}
					acked.Add(1)
				}
			}()
		}
	}
	wg.Wait()
	el := time.Since(start)
	if e := firstErr.Load(); e != nil {
		return unmeasured(name, "events/s", ">= 50000", fmt.Sprint(e))
	}
	if err := s.Verify(ctx); err != nil {
		return unmeasured(name, "events/s", ">= 50000", "chain does not verify after the run: "+err.Error())
	}
	n := acked.Load()
	rate := float64(n) / el.Seconds()
	return measured(name, stRound(rate, 0), "events/s", ">= 50000",
		fmt.Sprintf("%d events acknowledged durable in %.2fs, %d writers x %d in flight, group commit (fsync per transaction), chain verified%s",
			n, el.Seconds(), writers, inflight, note))
}

func stBenchCommit(ctx context.Context, dir string, n int, note string) Figure {
	const name = "storage.commit_p99_ms"
	s, err := storage.Open(dir, storage.Options{})
	if err != nil {
		return unmeasured(name, "ms", "<= 2", err.Error())
	}
	defer func() { _ = s.Close() }() // scratch store, writes already committed: a close error changes no figure
	var ms []float64
	for i := range n {
		start := time.Now()
		if _, err := s.Append(ctx, storage.Event{Kind: "run.state", Pipeline: "bench", Refs: []string{"bench/r1"},
			Details: map[string]string{"state": "running", "i": strconv.Itoa(i)}}); err != nil {
			return unmeasured(name, "ms", "<= 2", err.Error())
		}
		ms = append(ms, float64(time.Since(start).Nanoseconds())/1e6)
	}
	return measured(name, stRound(stQuantile(ms, 0.99), 3), "ms", "<= 2",
		fmt.Sprintf("p99 of %d sequential durable appends from one writer (p50 %.3f ms, max %.3f ms), bbolt on %s%s",
			n, stQuantile(ms, 0.5), stQuantile(ms, 1), "/var/tmp", note))
}

func stQuantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(q*float64(len(s)-1) + 0.5)
	return s[min(i, len(s)-1)]
}

func stRound(v float64, places int) float64 {
	p := 1.0
	for range places {
		p *= 10
	}
	return float64(int64(v*p+0.5)) / p
}
