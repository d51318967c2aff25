package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
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
	// p99s from >= 1,000 samples per side (BENCH.md).
	rounds, perRound := 20, 100
	eventsFor, commitRounds := 3*time.Second, 20
	note, runNote := "", ""
	if opt.Quick {
		shape = stGraph{pipelines: 4, runs: 60, window: 248}
		rounds, perRound = 4, 50
		eventsFor, commitRounds = time.Second, 4
		note, runNote = ", smaller graph for -quick", ", shorter run for -quick"
	}
	root, err := os.MkdirTemp("/var/tmp", "kilnbench-storage-")
	if err != nil {
		why := "temp dir under /var/tmp: " + err.Error()
		return []Figure{
			unmeasured("storage.ancestors_speedup", "x", ">= 4", why),
			unmeasured("storage.ancestors_p99_ms", "ms", "<= 0.5", why),
			unmeasured("storage.events_per_s", "events/s", ">= 50000", why),
			unmeasured("storage.commit_vs_sqlite", "x", "<= 1.0", why),
			unmeasured("storage.commit_p99_ms", "ms", "<= 2", why),
		}
	}
	defer func() { _ = os.RemoveAll(root) }() // best-effort cleanup of scratch data
	figs := stBenchAncestors(ctx, filepath.Join(root, "lineage"), shape, rounds, perRound, note)
	figs = append(figs, stBenchEvents(ctx, filepath.Join(root, "events"), eventsFor, runNote))
	figs = append(figs, stBenchCommit(ctx, filepath.Join(root, "commit"), commitRounds, perRound, runNote)...)
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

// stLoadSqlite copies kiln's lineage/up index (child, parent, type) into a
// sqlite table keyed like kiln's index: the very graph kiln answers from.
func stLoadSqlite(s *storage.Store, path string) (db *sqliteDB, n int, err error) {
	db, err = sqliteOpen(path)
	if err != nil {
		return nil, 0, err
	}
	defer func() {
		if err != nil {
			_ = db.Close() // the load error is the one to report
		}
	}()
	// The load is not what is timed: no journal, no sync.
	if err := db.Exec("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;" +
		"CREATE TABLE edges(child TEXT NOT NULL, parent TEXT NOT NULL, type TEXT NOT NULL, PRIMARY KEY(child, parent)) WITHOUT ROWID;" +
		"BEGIN;"); err != nil {
		return nil, 0, err
	}
	ins, err := db.Prepare("INSERT INTO edges VALUES(?1, ?2, ?3)")
	if err != nil {
		return nil, 0, err
	}
	defer ins.Close()
	err = s.View(func(tx *storage.Tx) error {
		return tx.Bolt().Bucket([]byte("lineage")).Bucket([]byte("up")).ForEach(func(k, v []byte) error {
			child, parent, _ := bytes.Cut(k, []byte{0})
			n++
			_, err := ins.Run(string(child), string(parent), string(v))
			return err
		})
	})
	if err != nil {
		return nil, n, err
	}
	// Queries then read the table the way kiln reads bbolt: memory-mapped
	// (bbolt always is), with a page cache larger than the table.
	if err := db.Exec("COMMIT; ANALYZE; PRAGMA mmap_size=1073741824; PRAGMA cache_size=-262144;"); err != nil {
		return nil, n, err
	}
	return db, n, nil
}

// stAncestorsSQL is the recursive ancestors query, one row per ancestor
// (UNION drops repeats, as kiln's walk does).
const stAncestorsSQL = "WITH RECURSIVE anc(x) AS (SELECT ?1 UNION SELECT e.parent FROM edges e JOIN anc ON e.child = anc.x) SELECT x FROM anc WHERE x <> ?1"

func stBenchAncestors(ctx context.Context, dir string, g stGraph, rounds, perRound int, note string) []Figure {
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
	sq, nEdges, sqliteErr := stLoadSqlite(s, filepath.Join(dir, "lineage.sqlite"))
	var query *sqliteStmt
	if sqliteErr == nil {
		defer func() { _ = sq.Close() }() // read-only from here: a close error changes no figure
		if query, sqliteErr = sq.Prepare(stAncestorsSQL); sqliteErr == nil {
			defer query.Close()
		}
	}
	rng := rand.New(rand.NewPCG(1, 2)) //nolint:gosec // fixed seed on purpose: the same query sample every run; nothing secret
	var kilnMS, sqlMS []float64
	ancestry := 0
	// Both sides answer the same batch, one call per query timed by the same
	// clock; the side that goes first alternates each round, and round 0 is
	// an untimed warm-up for both.
	for r := range rounds + 1 {
		batch := make([]string, perRound)
		for i := range batch {
			batch[i] = models[rng.IntN(len(models))]
		}
		kilnN := make([]int, perRound)
		kilnSide := func() error {
			for i, m := range batch {
				start := time.Now()
				anc, err := s.Ancestors(m, 0)
				el := time.Since(start)
				if err != nil {
					return err
				}
				kilnN[i] = len(anc)
				if r > 0 {
					kilnMS = append(kilnMS, float64(el.Nanoseconds())/1e6)
				}
				ancestry = len(anc)
			}
			return nil
		}
		sqlN := make([]int, perRound)
		sqlSide := func() error {
			if sqliteErr != nil {
				return nil
			}
			for i, m := range batch {
				start := time.Now()
				n, err := query.Run(m)
				el := time.Since(start)
				if err != nil {
					return err
				}
				sqlN[i] = n
				if r > 0 {
					sqlMS = append(sqlMS, float64(el.Nanoseconds())/1e6)
				}
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
		for i := range batch {
			if sqliteErr == nil && sqlN[i] != kilnN[i] {
				return fail(fmt.Sprintf("sqlite finds %d ancestors of %s, kiln %d", sqlN[i], batch[i], kilnN[i]))
			}
		}
	}
	kMed, kP99 := stQuantile(kilnMS, 0.5), stQuantile(kilnMS, 0.99)
	graph := fmt.Sprintf("%.2fM edges (%d pipelines x %d runs, window %d; kiln built it in %.1fs), ancestry %d nodes%s",
		float64(nEdges)/1e6, g.pipelines, g.runs, g.window, buildKiln.Seconds(), ancestry, note)
	figs := []Figure{}
	if sqliteErr != nil {
		figs = append(figs, unmeasured(speedup, "x", ">= 4", "sqlite baseline unavailable: "+sqliteErr.Error()))
	} else {
		sMed, sP99 := stQuantile(sqlMS, 0.5), stQuantile(sqlMS, 0.99)
		figs = append(figs, measured(speedup, stRound(sMed/kMed, 2), "x", ">= 4",
			fmt.Sprintf("ratio of medians: sqlite %s WITH RECURSIVE p50 %.3f ms p99 %.3f ms vs kiln p50 %.3f ms p99 %.3f ms; "+
				"%d queries each, one in-process call each timed the same way (sqlite: prepared statement, rows read, mmap, 256 MiB cache, "+
				"WITHOUT ROWID PK(child,parent)), same batches, order alternating in %d rounds after a warm-up round for both; %s",
				sqliteVersion(), sMed, sP99, kMed, kP99, len(kilnMS), rounds, graph)))
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

// stBenchCommit times single durable commits, one writer, no other load:
// kiln's Append of one event against sqlite's autocommit INSERT of one row
// in WAL mode with synchronous=FULL (the WAL is fsynced at every commit), in
// the same scratch folder, so on the same disk. The row holds what kiln's
// event does (the event's JSON body and one ref, indexed as kiln indexes
// refs). Both sides get an untimed warm-up block, then alternate blocks, the
// side that goes first alternating too.
func stBenchCommit(ctx context.Context, dir string, rounds, perRound int, note string) []Figure {
	const vs, p99 = "storage.commit_vs_sqlite", "storage.commit_p99_ms"
	fail := func(why string) []Figure {
		return []Figure{unmeasured(vs, "x", "<= 1.0", why), unmeasured(p99, "ms", "<= 2", why)}
	}
	s, err := storage.Open(filepath.Join(dir, "kiln"), storage.Options{})
	if err != nil {
		return fail(err.Error())
	}
	defer func() { _ = s.Close() }() // scratch store, writes already committed: a close error changes no figure
	event := func(i int) storage.Event {
		return storage.Event{Kind: "run.state", Pipeline: "bench", Refs: []string{"bench/r1"},
			Details: map[string]string{"state": "running", "i": strconv.Itoa(i)}}
	}
	sq, sqliteErr := sqliteOpen(filepath.Join(dir, "events.sqlite"))
	var ins *sqliteStmt
	if sqliteErr == nil {
		defer func() { _ = sq.Close() }() // every insert already committed: a close error changes no figure
		sqliteErr = sq.Exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;" +
			"CREATE TABLE events(seq INTEGER PRIMARY KEY, body TEXT NOT NULL, ref TEXT NOT NULL);" +
			"CREATE INDEX events_ref ON events(ref, seq);")
		if sqliteErr == nil {
			if ins, sqliteErr = sq.Prepare("INSERT INTO events(body, ref) VALUES(?1, ?2)"); sqliteErr == nil {
				defer ins.Close()
			}
		}
	}
	var kilnMS, sqlMS []float64
	i := 0
	kilnSide := func(timed bool) error {
		for range perRound {
			i++
			start := time.Now()
			_, err := s.Append(ctx, event(i))
			el := time.Since(start)
			if err != nil {
				return err
			}
			if timed {
				kilnMS = append(kilnMS, float64(el.Nanoseconds())/1e6)
			}
		}
		return nil
	}
	sqlSide := func(timed bool) error {
		for range perRound {
			i++
			// The same bytes kiln hashes and stores (its body is this plus seq,
			// prev and time).
			body, err := json.Marshal(event(i))
			if err != nil {
				return err
			}
			start := time.Now()
			_, err = ins.Run(string(body), "bench/r1")
			el := time.Since(start)
			if err != nil {
				return err
			}
			if timed {
				sqlMS = append(sqlMS, float64(el.Nanoseconds())/1e6)
			}
		}
		return nil
	}
	for r := range rounds + 1 {
		sides := []func(bool) error{kilnSide, sqlSide}
		if sqliteErr != nil {
			sides = sides[:1]
		} else if r%2 == 1 {
			sides[0], sides[1] = sides[1], sides[0]
		}
		for _, side := range sides {
			if err := side(r > 0); err != nil {
				return fail(err.Error())
			}
		}
	}
	kP50, kP99 := stQuantile(kilnMS, 0.5), stQuantile(kilnMS, 0.99)
	kiln := fmt.Sprintf("kiln p99 %.3f ms p50 %.3f ms max %.3f ms", kP99, kP50, stQuantile(kilnMS, 1))
	var figs []Figure
	if sqliteErr != nil {
		figs = append(figs, unmeasured(vs, "x", "<= 1.0", "sqlite baseline unavailable: "+sqliteErr.Error()))
	} else {
		sP50, sP99 := stQuantile(sqlMS, 0.5), stQuantile(sqlMS, 0.99)
		figs = append(figs, measured(vs, stRound(kP99/sP99, 2), "x", "<= 1.0",
			fmt.Sprintf("ratio of p99s: %s vs sqlite %s insert (WAL, synchronous=FULL) p99 %.3f ms p50 %.3f ms max %.3f ms; "+
				"%d single commits each, one writer, in-process calls, both files in one folder under /var/tmp, alternating blocks of %d after a warm-up block for both%s",
				kiln, sqliteVersion(), sP99, sP50, stQuantile(sqlMS, 1), len(kilnMS), perRound, note)))
	}
	figs = append(figs, measured(p99, stRound(kP99, 3), "ms", "<= 2",
		fmt.Sprintf("%s, %d sequential durable appends from one writer (bbolt: data then meta page, an fdatasync each), under /var/tmp%s",
			kiln, len(kilnMS), note)))
	return figs
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
