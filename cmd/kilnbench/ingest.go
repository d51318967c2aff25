package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/daemon/ingest"
	"github.com/kiln-edge/kiln/storage"
)

func init() { register(Group{Name: "ingest", Run: benchIngest}) }

// benchIngest measures the drop folder path in-process, on /var/tmp (a real disk): the
// ingest.Manager the daemon runs, on a real store, with real inotify.
func benchIngest(ctx context.Context, opt Options) []Figure {
	root, err := os.MkdirTemp("/var/tmp", "kilnbench-ingest-")
	if err != nil {
		why := "temp dir under /var/tmp: " + err.Error()
		return []Figure{
			unmeasured("ingest.throughput_vs_baseline", "x", ">= 2", why),
			unmeasured("ingest.hash_gbps", "GB/s", ">= 1.2", why),
			unmeasured("ingest.seen_p99_ms", "ms", "<= 5", why),
			unmeasured("ingest.commit_p99_ms", "ms", "<= 50", why),
			unmeasured("ingest.burst_missed", "files", "== 0", why),
		}
	}
	defer func() { _ = os.RemoveAll(root) }() // best-effort cleanup of scratch data
	var figs []Figure
	figs = append(figs, inBenchThroughput(ctx, filepath.Join(root, "tp"), opt))
	figs = append(figs, inBenchHash(opt))
	figs = append(figs, inBenchLatency(ctx, filepath.Join(root, "lat"), opt)...)
	figs = append(figs, inBenchBurst(ctx, filepath.Join(root, "burst"), opt))
	return figs
}

// inRig is one Manager on a fresh store under dir, counting what it observes.
type inRig struct {
	dir    string
	store  *storage.Store
	m      *ingest.Manager
	cancel context.CancelFunc
	done   chan error

	mu        sync.Mutex
	seen      map[string]time.Time
	committed map[string]time.Time
	cond      *sync.Cond
}

func inSpec(name, data string) (*config.Pipeline, error) {
	return config.ParsePipeline(name+".yaml", []byte("data: "+data+"\ntrain: {image: kiln.local/t:1}\nserve: {image: kiln.local/s:1}\n"))
}

func newInRig(ctx context.Context, dir string, spec *config.Pipeline) (*inRig, error) {
	store, err := storage.Open(filepath.Join(dir, "state"), storage.Options{})
	if err != nil {
		return nil, err
	}
	r := &inRig{dir: dir, store: store, seen: map[string]time.Time{}, committed: map[string]time.Time{}}
	r.cond = sync.NewCond(&r.mu)
	m, err := ingest.New(ingest.Options{
		Store: store, DropDir: filepath.Join(dir, "drop"), FeedbackDir: filepath.Join(dir, "feedback"),
		QuarantineDir: filepath.Join(dir, "quarantine"),
		Log:           slog.New(slog.DiscardHandler),
		Observe: func(o ingest.Observation) {
			r.mu.Lock()
			switch o.Step {
			case "seen":
				if _, ok := r.seen[o.Path]; !ok {
					r.seen[o.Path] = o.Time
				}
			default:
				r.committed[o.Path] = o.Time
			}
			r.mu.Unlock()
			r.cond.Broadcast()
		},
	})
	if err != nil {
		_ = store.Close()
		return nil, err
	}
	m.SetPipelines(map[string]*config.Pipeline{spec.Name: spec})
	cctx, cancel := context.WithCancel(ctx)
	r.m, r.cancel, r.done = m, cancel, make(chan error, 1)
	go func() { r.done <- m.Run(cctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for len(m.Status().Pipelines) == 0 {
		if time.Now().After(deadline) {
			r.close()
			return nil, fmt.Errorf("ingest did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return r, nil
}

func (r *inRig) drop(p string) string { return filepath.Join(r.dir, "drop", p) }

// waitCommitted waits until n paths were committed (or quarantined, or found duplicate).
func (r *inRig) waitCommitted(n int, limit time.Duration) error {
	timer := time.AfterFunc(limit, r.cond.Broadcast)
	defer timer.Stop()
	deadline := time.Now().Add(limit)
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(r.committed) < n {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d committed after %s", len(r.committed), n, limit)
		}
		r.cond.Wait()
	}
	return nil
}

func (r *inRig) close() {
	r.cancel()
	<-r.done //nolint:errcheck // Run's return once cancelled; the figures are already taken
	_ = r.store.Close()
}

// inBenchThroughput: kiln ingest of 1 GiB (copy into the blob store, hash, fsync) against
// `cp` + `sha256sum` + `sync` of the same files, alternating.
func inBenchThroughput(ctx context.Context, dir string, opt Options) Figure {
	const name, unit, goal = "ingest.throughput_vs_baseline", "x", ">= 2"
	for _, tool := range []string{"cp", "sha256sum", "sync"} {
		if _, err := exec.LookPath(tool); err != nil {
			return unmeasured(name, unit, goal, tool+" not found")
		}
	}
	files, size, rounds := 8, int64(128<<20), 3
	if opt.Quick {
		files, size, rounds = 4, 32<<20, 1
	}
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return unmeasured(name, unit, goal, err.Error())
	}
	for i := range files {
		if err := writeCSV(filepath.Join(src, fmt.Sprintf("part%02d.csv", i)), size, i); err != nil {
			return unmeasured(name, unit, goal, err.Error())
		}
	}
	total := float64(int64(files) * size)
	var kilnMBs, baseMBs, csvMBs []float64
	for round := range rounds {
		// Baseline: copy, hash the copies, flush to disk.
		dst := filepath.Join(dir, fmt.Sprintf("cp%d", round))
		if err := exec.CommandContext(ctx, "sync").Run(); err != nil {
			return unmeasured(name, unit, goal, err.Error())
		}
		t0 := time.Now()
		cmd := exec.CommandContext(ctx, "sh", "-c", `mkdir -p "$2" && cp "$1"/* "$2"/ && sha256sum "$2"/* >/dev/null && sync`, "sh", src, dst)
		if out, err := cmd.CombinedOutput(); err != nil {
			return unmeasured(name, unit, goal, fmt.Sprintf("baseline: %v: %s", err, out))
		}
		baseMBs = append(baseMBs, total/1e6/time.Since(t0).Seconds())
		_ = os.RemoveAll(dst)
		// kiln, format files: exactly copy + hash + fsync into the blob store.
		mbs, err := inIngestOnce(ctx, filepath.Join(dir, fmt.Sprintf("kf%d", round)), src, files, "{format: files, settle: 0s}")
		if err != nil {
			return unmeasured(name, unit, goal, "kiln: "+err.Error())
		}
		kilnMBs = append(kilnMBs, total/1e6/mbs)
		// kiln, format csv: also parsed, checked and split into train and holdout blobs.
		mbs, err = inIngestOnce(ctx, filepath.Join(dir, fmt.Sprintf("kc%d", round)), src, files, "{format: csv, label: label, settle: 0s}")
		if err != nil {
			return unmeasured(name, unit, goal, "kiln csv: "+err.Error())
		}
		csvMBs = append(csvMBs, total/1e6/mbs)
	}
	k, b, c := median(kilnMBs), median(baseMBs), median(csvMBs)
	return measured(name, k/b, unit, goal, fmt.Sprintf(
		"kiln %.0f MB/s vs cp+sha256sum+sync %.0f MB/s, %d x %d MiB, median of %d alternating rounds; format csv (parse, checks, train/holdout blobs) %.0f MB/s = %.2fx",
		k, b, files, size>>20, rounds, c, c/b))
}

// inIngestOnce stages the files into a fresh rig's drop folder (a copy, flushed, then
// renamed in) and returns the seconds from the renames to the last commit.
func inIngestOnce(ctx context.Context, dir, src string, files int, data string) (float64, error) {
	defer func() { _ = os.RemoveAll(dir) }()
	spec, err := inSpec("tp", data)
	if err != nil {
		return 0, err
	}
	r, err := newInRig(ctx, dir, spec)
	if err != nil {
		return 0, err
	}
	defer r.close()
	stage := filepath.Join(dir, "stage")
	if out, err := exec.CommandContext(ctx, "sh", "-c", `mkdir -p "$2" && cp "$1"/* "$2"/ && sync`, "sh", src, stage).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("stage: %v: %s", err, out)
	}
	ents, err := os.ReadDir(stage)
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	for _, e := range ents {
		if err := os.Rename(filepath.Join(stage, e.Name()), filepath.Join(r.drop("tp"), e.Name())); err != nil {
			return 0, err
		}
	}
	if err := r.waitCommitted(files, 10*time.Minute); err != nil {
		return 0, err
	}
	took := time.Since(t0).Seconds()
	var bad []string
	_ = r.store.View(func(tx *storage.Tx) error {
		ds, err := tx.Datasets("tp")
		for _, d := range ds {
			if d.State != storage.DatasetAccepted {
				bad = append(bad, d.ID+": "+d.Reason)
			}
		}
		return err
	})
	if len(bad) > 0 {
		return 0, fmt.Errorf("not accepted: %s", strings.Join(bad, "; "))
	}
	return took, nil
}

// writeCSV writes about size bytes of a numeric CSV with a label.
func writeCSV(path string, size int64, seed int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := &countingWriter{w: f}
	buf := make([]byte, 0, 1<<20)
	buf = append(buf, "f1,f2,f3,f4,label\n"...)
	x := uint64(seed)*0x9e3779b97f4a7c15 + 1 //nolint:gosec // the seed's bits, as they are: any value seeds the stream
	for w.n+int64(len(buf)) < size {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		buf = fmt.Appendf(buf, "%d.%02d,%d,%d.%d,%d,%c\n", x%1000, x%97, x%100000, x%31, x%9, x%7, 'a'+byte(x%3))
		if len(buf) > 1<<20-64 {
			if _, err := w.Write(buf); err != nil {
				_ = f.Close()
				return err
			}
			buf = buf[:0]
		}
	}
	if _, err := w.Write(buf); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// inBenchHash: sha256 throughput on one core, the hash PutBlob runs while copying.
func inBenchHash(opt Options) Figure {
	buf := make([]byte, 64<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	reps := 8
	if opt.Quick {
		reps = 2
	}
	var gbps []float64
	for range 5 {
		h := sha256.New()
		t0 := time.Now()
		for range reps {
			h.Write(buf)
		}
		_ = h.Sum(nil)
		gbps = append(gbps, float64(len(buf)*reps)/1e9/time.Since(t0).Seconds())
	}
	return measured("ingest.hash_gbps", median(gbps), "GB/s", ">= 1.2",
		fmt.Sprintf("crypto/sha256 on one goroutine, %d MiB x 5, median (sha256sum here: 0.19-0.28 GB/s)", len(buf)*reps>>20))
}

// inBenchLatency drops small CSVs one at a time (renamed in, settle 0) and times the
// rename -> seen and rename -> committed steps.
func inBenchLatency(ctx context.Context, dir string, opt Options) []Figure {
	n := 300
	if opt.Quick {
		n = 60
	}
	fail := func(why string) []Figure {
		return []Figure{unmeasured("ingest.seen_p99_ms", "ms", "<= 5", why), unmeasured("ingest.commit_p99_ms", "ms", "<= 50", why)}
	}
	spec, err := inSpec("lat", "{format: csv, label: label, settle: 0s}")
	if err != nil {
		return fail(err.Error())
	}
	r, err := newInRig(ctx, dir, spec)
	if err != nil {
		return fail(err.Error())
	}
	defer r.close()
	stage := filepath.Join(dir, "stage")
	if err := os.MkdirAll(stage, 0o755); err != nil {
		return fail(err.Error())
	}
	var seen, committed []float64
	for i := range n {
		name := fmt.Sprintf("s%04d.csv", i)
		var b strings.Builder
		b.WriteString("f1,f2,label\n")
		for j := range 100 {
			fmt.Fprintf(&b, "%d,%d.5,%c\n", i*1000+j, j%13, 'a'+byte(j%3))
		}
		if err := os.WriteFile(filepath.Join(stage, name), []byte(b.String()), 0o644); err != nil {
			return fail(err.Error())
		}
		dst := filepath.Join(r.drop("lat"), name)
		t0 := time.Now()
		if err := os.Rename(filepath.Join(stage, name), dst); err != nil {
			return fail(err.Error())
		}
		if err := r.waitCommitted(i+1, 30*time.Second); err != nil {
			return fail(err.Error())
		}
		r.mu.Lock()
		seen = append(seen, float64(r.seen[dst].Sub(t0).Microseconds())/1000)
		committed = append(committed, float64(r.committed[dst].Sub(t0).Microseconds())/1000)
		r.mu.Unlock()
		time.Sleep(2 * time.Millisecond)
	}
	return []Figure{
		measured("ingest.seen_p99_ms", percentile(seen, 99), "ms", "<= 5",
			fmt.Sprintf("rename into drop/ -> event handled, %d drops one at a time, p50 %.3f ms", n, median(seen))),
		measured("ingest.commit_p99_ms", percentile(committed, 99), "ms", "<= 50",
			fmt.Sprintf("rename -> dataset version durable (raw, train, holdout and meta blobs fsynced, one bbolt commit), 100-row CSV, settle 0, p50 %.2f ms, %d drops", median(committed), n)),
	}
}

// inBenchBurst renames 40,000 small files into the drop folder as fast as it can (more than
// the inotify queue's 16384) and counts files not ingested plus files ingested twice.
func inBenchBurst(ctx context.Context, dir string, opt Options) Figure {
	const name, unit, goal = "ingest.burst_missed", "files", "== 0"
	n := 40000
	note := ""
	if opt.Quick {
		n, note = 5000, ", 5,000 files for -quick (under the queue size)"
	}
	spec, err := inSpec("burst", "{format: csv, label: label, settle: 0s}")
	if err != nil {
		return unmeasured(name, unit, goal, err.Error())
	}
	stage := filepath.Join(dir, "stage")
	if err := os.MkdirAll(stage, 0o755); err != nil {
		return unmeasured(name, unit, goal, err.Error())
	}
	names := make([]string, n)
	for i := range n {
		names[i] = fmt.Sprintf("b%06d.csv", i)
		if err := os.WriteFile(filepath.Join(stage, names[i]), fmt.Appendf(nil, "x,label\n%d,a\n", i), 0o644); err != nil {
			return unmeasured(name, unit, goal, err.Error())
		}
	}
	r, err := newInRig(ctx, dir, spec)
	if err != nil {
		return unmeasured(name, unit, goal, err.Error())
	}
	defer r.close()
	rescans := r.m.Status().Rescans
	t0 := time.Now()
	for _, nm := range names {
		if err := os.Rename(filepath.Join(stage, nm), filepath.Join(r.drop("burst"), nm)); err != nil {
			return unmeasured(name, unit, goal, err.Error())
		}
	}
	renamed := time.Since(t0)
	waitErr := r.waitCommitted(n, 5*time.Minute)
	took := time.Since(t0)
	for r.m.Status().Pending+r.m.Status().Busy > 0 && time.Since(t0) < 6*time.Minute {
		time.Sleep(50 * time.Millisecond)
	}
	var ds []storage.Dataset
	if err := r.store.View(func(tx *storage.Tx) error { var err error; ds, err = tx.Datasets("burst"); return err }); err != nil {
		return unmeasured(name, unit, goal, err.Error())
	}
	perDigest := map[string]int{}
	for _, d := range ds {
		for _, f := range ingest.DataFiles(d) {
			perDigest[f.Blob.Digest]++
		}
	}
	twice := 0
	for _, c := range perDigest {
		if c > 1 {
			twice += c - 1
		}
	}
	missed := n - len(perDigest)
	detail := fmt.Sprintf("%d files renamed in within %s; %d versions in %s (%.0f files/s); missed %d, twice %d; %d overflow rescans%s",
		n, renamed.Round(time.Millisecond), len(ds), took.Round(time.Millisecond), float64(len(ds))/took.Seconds(), missed, twice,
		r.m.Status().Rescans-rescans, note)
	if waitErr != nil {
		detail += "; " + waitErr.Error()
	}
	return measured(name, float64(missed+twice), unit, goal, detail)
}
