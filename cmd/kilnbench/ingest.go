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
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
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
			unmeasured("ingest.csv_vs_baseline", "x", ">= 0.5", why),
			unmeasured("ingest.csv_vs_mlr", "x", ">= 3", why),
			unmeasured("ingest.hash_gbps", "GB/s", ">= 1.2", why),
			unmeasured("ingest.seen_p99_ms", "ms", "<= 5", why),
			unmeasured("ingest.commit_p99_ms", "ms", "<= 50", why),
			unmeasured("ingest.burst_missed", "files", "== 0", why),
			unmeasured(imagesName, "x", ">= 1.0", why),
		}
	}
	defer func() { _ = os.RemoveAll(root) }() // best-effort cleanup of scratch data
	var figs []Figure
	figs = append(figs, inBenchThroughput(ctx, filepath.Join(root, "tp"), opt)...)
	figs = append(figs, inBenchHash(opt))
	figs = append(figs, inBenchLatency(ctx, filepath.Join(root, "lat"), opt)...)
	figs = append(figs, inBenchBurst(ctx, filepath.Join(root, "burst"), opt))
	figs = append(figs, inBenchImages(ctx, filepath.Join(root, "img"), opt))
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

// inCSVSpec is the pipeline a CSV drop is ingested with: the checks a real pipeline sets.
const inCSVSpec = "{format: csv, label: label, settle: 0s, validate: {max_null_fraction: 0.1, max_duplicate_fraction: 0.5, labels: [a, b, c]}}"

// inBenchThroughput: kiln ingest of 1 GiB of wide numeric CSV files, as format files (copy
// into the blob store, hash, fsync) and as format csv (also parsed, checked and split into
// train and holdout blobs), against `cp` + `xargs -P N sha256sum` + `sync` of the copies and
// their folder, N being the files kiln reads at once; then kiln's CSV ingest of a smaller
// file against `mlr --icsv summary` of it. Every pair alternates which side goes first.
func inBenchThroughput(ctx context.Context, dir string, opt Options) []Figure {
	const tpName, csvName, mlrName = "ingest.throughput_vs_baseline", "ingest.csv_vs_baseline", "ingest.csv_vs_mlr"
	fail := func(why string) []Figure {
		return []Figure{unmeasured(tpName, "x", ">= 2", why), unmeasured(csvName, "x", ">= 0.5", why), unmeasured(mlrName, "x", ">= 3", why)}
	}
	for _, tool := range []string{"cp", "sha256sum", "xargs", "sync"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fail(tool + " not found")
		}
	}
	// Two rounds, one in each order: the harness repeats the group for its median. Miller's
	// summary runs at a few MB/s here, so it gets a file of its own, smaller than the set.
	files, size, oneSize, rounds := 8, int64(128<<20), int64(32<<20), 2
	if opt.Quick {
		files, size, oneSize, rounds = 2, 32<<20, 8<<20, 1
	}
	src, one := filepath.Join(dir, "src"), filepath.Join(dir, "one")
	for _, d := range []string{src, one} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fail(err.Error())
		}
	}
	var total int64
	for i := range files {
		n, err := writeWideCSV(filepath.Join(src, fmt.Sprintf("part%02d.csv", i)), size, i)
		if err != nil {
			return fail(err.Error())
		}
		total += n
	}
	oneSize, err := writeWideCSV(filepath.Join(one, "one.csv"), oneSize, files)
	if err != nil {
		return fail(err.Error())
	}
	mb := func(bytes int64, secs float64) float64 { return float64(bytes) / 1e6 / secs }
	// CPU seconds of each side too: on a busy machine they say what wall time cannot.
	var kilnMBs, baseMBs, csvMBs, oneMBs, mlrMBs, baseCPU, csvCPU, oneCPU, mlrCPU []float64
	baseline := func(round int) (float64, error) {
		dst := filepath.Join(dir, fmt.Sprintf("cp%d", round))
		defer func() { _ = os.RemoveAll(dst) }()
		if err := exec.CommandContext(ctx, "sync").Run(); err != nil {
			return 0, err
		}
		t0 := time.Now()
		cmd := exec.CommandContext(ctx, "sh", "-c", `mkdir -p "$2" && cp "$1"/* "$2"/ && ls -d "$2"/* | xargs -P "$3" -n 1 sha256sum >/dev/null && sync "$2"/* "$2"`,
			"sh", src, dst, strconv.Itoa(ingest.ParallelFiles))
		if out, err := cmd.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("baseline: %v: %s", err, out)
		}
		secs := time.Since(t0).Seconds()
		baseCPU = append(baseCPU, (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds())
		return mb(total, secs), nil
	}
	mlr := func() (float64, error) {
		t0 := time.Now()
		cmd := exec.CommandContext(ctx, "mlr", "--icsv", "summary", filepath.Join(one, "one.csv"))
		var stderr strings.Builder
		cmd.Stdout, cmd.Stderr = io.Discard, &stderr
		if err := cmd.Run(); err != nil {
			return 0, fmt.Errorf("mlr: %v: %s", err, stderr.String())
		}
		secs := time.Since(t0).Seconds()
		mlrCPU = append(mlrCPU, (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds())
		return mb(oneSize, secs), nil
	}
	_, mlrErr := exec.LookPath("mlr")
	for round := range rounds {
		steps := []func() error{
			func() error { v, err := baseline(round); baseMBs = append(baseMBs, v); return err },
			func() error {
				secs, _, err := inIngestOnce(ctx, filepath.Join(dir, fmt.Sprintf("kf%d", round)), src, "{format: files, settle: 0s}")
				kilnMBs = append(kilnMBs, mb(total, secs))
				return err
			},
			func() error {
				secs, cpu, err := inIngestOnce(ctx, filepath.Join(dir, fmt.Sprintf("kc%d", round)), src, inCSVSpec)
				csvMBs, csvCPU = append(csvMBs, mb(total, secs)), append(csvCPU, cpu)
				return err
			},
		}
		if mlrErr == nil {
			steps = append(steps,
				func() error { v, err := mlr(); mlrMBs = append(mlrMBs, v); return err },
				func() error {
					secs, cpu, err := inIngestOnce(ctx, filepath.Join(dir, fmt.Sprintf("k1%d", round)), one, inCSVSpec)
					oneMBs, oneCPU = append(oneMBs, mb(oneSize, secs)), append(oneCPU, cpu)
					return err
				})
		}
		if round%2 == 1 {
			slices.Reverse(steps)
		}
		for _, step := range steps {
			if err := step(); err != nil {
				return fail(err.Error())
			}
		}
	}
	k, b, c := median(kilnMBs), median(baseMBs), median(csvMBs)
	how := fmt.Sprintf("%d x %d MB of CSV (32 float columns and a label), median of %d rounds, order alternating", files, size/1e6, rounds)
	base := fmt.Sprintf("cp + xargs -P %d sha256sum + sync of the copies %.0f MB/s (%.0f-%.0f)", ingest.ParallelFiles, b, slices.Min(baseMBs), slices.Max(baseMBs))
	figs := []Figure{
		measured(tpName, k/b, "x", ">= 2", fmt.Sprintf("kiln format files %.0f MB/s (%.0f-%.0f) vs %s; %s", k, slices.Min(kilnMBs), slices.Max(kilnMBs), base, how)),
		measured(csvName, c/b, "x", ">= 0.5", fmt.Sprintf("kiln format csv (parse, checks, train/holdout blobs, all fsynced) %.0f MB/s (%.0f-%.0f) vs %s; CPU seconds per GB kiln %.1f, baseline %.1f; %s",
			c, slices.Min(csvMBs), slices.Max(csvMBs), base, median(csvCPU)*1e9/float64(total), median(baseCPU)*1e9/float64(total), how)),
	}
	if mlrErr != nil {
		return append(figs, unmeasured(mlrName, "x", ">= 3", "mlr not found (make deps installs Debian's miller)"))
	}
	o, l := median(oneMBs), median(mlrMBs)
	return append(figs, measured(mlrName, o/l, "x", ">= 3", fmt.Sprintf(
		"kiln format csv of one %d MB file %.0f MB/s (%.0f-%.0f) vs mlr --icsv summary of it %.0f MB/s (%.0f-%.0f); CPU seconds kiln %.2f, mlr %.2f; median of %d rounds, order alternating",
		oneSize/1e6, o, slices.Min(oneMBs), slices.Max(oneMBs), l, slices.Min(mlrMBs), slices.Max(mlrMBs), median(oneCPU), median(mlrCPU), rounds)))
}

// inIngestOnce stages the files of src into a fresh rig's drop folder (a copy, flushed, then
// renamed in) and returns the seconds from the renames to the last commit, and the CPU
// seconds this process spent meanwhile.
func inIngestOnce(ctx context.Context, dir, src, data string) (secs, cpu float64, err error) {
	defer func() { _ = os.RemoveAll(dir) }()
	spec, err := inSpec("tp", data)
	if err != nil {
		return 0, 0, err
	}
	r, err := newInRig(ctx, dir, spec)
	if err != nil {
		return 0, 0, err
	}
	defer r.close()
	stage := filepath.Join(dir, "stage")
	if out, err := exec.CommandContext(ctx, "sh", "-c", `mkdir -p "$2" && cp "$1"/* "$2"/ && sync`, "sh", src, stage).CombinedOutput(); err != nil {
		return 0, 0, fmt.Errorf("stage: %v: %s", err, out)
	}
	ents, err := os.ReadDir(stage)
	if err != nil {
		return 0, 0, err
	}
	cpu0 := cpuSeconds()
	t0 := time.Now()
	for _, e := range ents {
		if err := os.Rename(filepath.Join(stage, e.Name()), filepath.Join(r.drop("tp"), e.Name())); err != nil {
			return 0, 0, err
		}
	}
	if err := r.waitCommitted(len(ents), 10*time.Minute); err != nil {
		return 0, 0, err
	}
	took, cpu := time.Since(t0).Seconds(), cpuSeconds()-cpu0
	if err := checkAccepted(r.store, "tp", len(ents), -1); err != nil {
		return 0, 0, err
	}
	return took, cpu, nil
}

// checkAccepted fails unless pipeline has exactly versions dataset versions, all accepted,
// each with rows rows (rows < 0: any).
func checkAccepted(store *storage.Store, pipeline string, versions int, rows int64) error {
	var bad []string
	err := store.View(func(tx *storage.Tx) error {
		ds, err := tx.Datasets(pipeline)
		for _, d := range ds {
			if d.State != storage.DatasetAccepted || rows >= 0 && d.Rows != rows {
				bad = append(bad, fmt.Sprintf("%s: %s, %d rows: %s", d.ID, d.State, d.Rows, d.Reason))
			}
		}
		if err == nil && len(ds) != versions {
			bad = append(bad, fmt.Sprintf("%d versions for %d drops", len(ds), versions))
		}
		return err
	})
	if err != nil {
		return err
	}
	if len(bad) > 0 {
		return fmt.Errorf("not accepted: %s", strings.Join(bad, "; "))
	}
	return nil
}

// cpuSeconds is the user and system CPU time of this process so far.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// writeWideCSV writes about size bytes of a wide numeric CSV: 32 features with six decimals
// (-100 to 100, as a scaled feature) and a label of three classes; it returns the bytes
// written.
func writeWideCSV(path string, size int64, seed int) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	var n int64
	buf := make([]byte, 0, 1<<20)
	for i := range 32 {
		buf = fmt.Appendf(buf, "f%d,", i)
	}
	buf = append(buf, "label\n"...)
	x := uint64(seed)*0x9e3779b97f4a7c15 + 1 //nolint:gosec // the seed's bits, as they are: any value seeds the stream
	for n+int64(len(buf)) < size {
		for range 32 {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			v := x % 200_000_000
			if v < 100_000_000 {
				buf = append(buf, '-')
			} else {
				v -= 100_000_000
			}
			buf = strconv.AppendUint(buf, v/1_000_000, 10)
			buf = append(buf, '.')
			for d := uint64(100_000); d > 0; d /= 10 {
				buf = append(buf, byte('0'+v/d%10))
			}
			buf = append(buf, ',')
		}
		buf = append(buf, 'a'+byte((x>>60)%3), '\n')
		if len(buf) > 1<<20-512 {
			if _, err := f.Write(buf); err != nil {
				_ = f.Close()
				return 0, err
			}
			n += int64(len(buf))
			buf = buf[:0]
		}
	}
	if _, err := f.Write(buf); err != nil {
		_ = f.Close()
		return 0, err
	}
	return n + int64(len(buf)), f.Close()
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
	n := 1000 // BENCH.md: a p99 from >= 1,000 samples
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
	c, err := countIngested(r.store, "burst", n)
	if err != nil {
		return unmeasured(name, unit, goal, err.Error())
	}
	detail := fmt.Sprintf("%d files renamed in within %s; %d versions in %s (%.0f files/s); not ingested %d, ingested twice %d (%d in two versions, %d dataset.duplicate events); %d overflow rescans%s",
		n, renamed.Round(time.Millisecond), c.versions, took.Round(time.Millisecond), float64(c.versions)/took.Seconds(),
		c.missed, c.twice(), c.inTwoVersions, c.duplicates, r.m.Status().Rescans-rescans, note)
	if waitErr != nil {
		detail += "; " + waitErr.Error()
	}
	return measured(name, float64(c.missed+c.twice()), unit, goal, detail)
}

// ingestCount is what a burst of n files of distinct content left in a pipeline's history.
type ingestCount struct {
	versions      int
	missed        int // files whose content is in no version
	inTwoVersions int // extra versions holding content another version holds
	duplicates    int // dataset.duplicate events: a file read again after its content was committed
}

// twice is the files ingested twice: content dedup turns a second read of a file into a
// dataset.duplicate event rather than a second version, so both are counted.
func (c ingestCount) twice() int { return c.inTwoVersions + c.duplicates }

func countIngested(store *storage.Store, pipeline string, n int) (ingestCount, error) {
	var c ingestCount
	var ds []storage.Dataset
	if err := store.View(func(tx *storage.Tx) error { var err error; ds, err = tx.Datasets(pipeline); return err }); err != nil {
		return c, err
	}
	perDigest := map[string]int{}
	for _, d := range ds {
		for _, f := range ingest.DataFiles(d) {
			perDigest[f.Blob.Digest]++
		}
	}
	for _, k := range perDigest {
		c.inTwoVersions += k - 1
	}
	evs, err := store.Events(1, 0)
	if err != nil {
		return c, err
	}
	for _, e := range evs {
		if e.Kind == "dataset.duplicate" && e.Pipeline == pipeline {
			c.duplicates++
		}
	}
	c.versions, c.missed = len(ds), n-len(perDigest)
	return c, nil
}
