package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/kiln-edge/kiln/daemon/apiclient"
	"github.com/kiln-edge/kiln/examples/tabular/images"
)

func init() { register(Group{Name: "e2e", Run: benchE2E}) }

const e2eSpec = `name: bench
data: {format: csv, label: diagnosis, settle: 0s}
train: {image: kiln.local/tabular-trainer:1, timeout: 5m}
serve: {image: kiln.local/tabular-server:1}
triggers: {new_data: {debounce: 0s, min_rows: 1}}
`

// benchE2E times BENCH.md's e2e figures: the tabular example and the
// PyTorch images example.
//
// benchE2ETabular times e2e.drop_to_serving_s: the example data renamed
// into a drop folder until a new model answers on the endpoint, with each
// phase (from the event log's timestamps) in the detail.
func benchE2E(ctx context.Context, opt Options) []Figure {
	return []Figure{benchE2ETabular(ctx, opt), benchE2EImages(ctx, opt)}
}

func benchE2ETabular(ctx context.Context, opt Options) Figure {
	const name, unit, goal = "e2e.drop_to_serving_s", "s", "<= 2"
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
	data, err := os.ReadFile("examples/tabular/data/breast_cancer.csv")
	if err != nil {
		return fail("run from the repository root: " + err.Error())
	}
	l, stop, err := startLoop(ctx, kilnd, addr, "e2e", "bench", e2eSpec)
	if err != nil {
		return fail(err.Error())
	}
	defer stop()
	root, c := l.root, l.c

	drop := filepath.Join(root, "var/lib/kiln/drop/bench")
	if err := os.MkdirAll(drop, 0o755); err != nil {
		return fail(err.Error())
	}
	tmp := filepath.Join(drop, ".data.csv.part")
	if err := os.WriteFile(tmp, data, 0o644); err != nil { //nolint:gosec // G703: a fixed name under the scratch folder MkdirTemp just made
		return fail(err.Error())
	}
	seq, _ := lastSeq(ctx, c)
	t0 := time.Now()
	if err := os.Rename(tmp, filepath.Join(drop, "data.csv")); err != nil {
		return fail(err.Error())
	}
	// Served: a prediction answered by the endpoint.
	row := strings.Join(strings.Split(strings.Split(string(data), "\n")[1], ",")[:30], ",") + "\n"
	deadline := time.Now().Add(5 * time.Minute)
	for {
		var out strings.Builder
		if err := c.Predict(ctx, "bench", strings.NewReader(row), &out); err == nil && strings.TrimSpace(out.String()) != "" {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fail("no model answered within 5 minutes; see " + filepath.Join(root, "kilnd.log"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	total := time.Since(t0)
	return measured(name, total.Seconds(), unit, goal, phases(ctx, c, seq, t0)+", breast cancer CSV 569 rows, CPU-only")
}

func lastSeq(ctx context.Context, c *apiclient.Client) (uint64, error) {
	st, err := c.Status(ctx)
	return st.Store.EventSeq, err
}

// phases lists the time from the rename to each step kilnd recorded.
func phases(ctx context.Context, c *apiclient.Client, since uint64, t0 time.Time) string {
	evs, err := c.Events(ctx, since+1, 0)
	if err != nil {
		return "phases unknown: " + err.Error()
	}
	var parts []string
	for _, e := range evs {
		switch e.Kind {
		case "dataset.accepted", "run.queued", "run.started", "model.candidate", "model.evaluating", "model.promoted":
			parts = append(parts, fmt.Sprintf("%s +%.2fs", e.Kind, e.Time.Sub(t0).Seconds()))
		}
	}
	return strings.Join(parts, ", ")
}

func cleanNamespace(addr, ns string) {
	out, _ := exec.Command("ctr", "-a", addr, "-n", ns, "containers", "ls", "-q").Output()
	for _, id := range strings.Fields(string(out)) {
		_ = exec.Command("ctr", "-a", addr, "-n", ns, "tasks", "kill", "-s", "SIGKILL", id).Run()
		time.Sleep(200 * time.Millisecond)
		_ = exec.Command("ctr", "-a", addr, "-n", ns, "tasks", "delete", "-f", id).Run()
		_ = exec.Command("ctr", "-a", addr, "-n", ns, "containers", "delete", id).Run()
	}
}

// loopRoot makes a scratch kiln root for a group that runs kilnd against
// the private containerd at addr: the example images built under it,
// kiln.yaml naming a containerd namespace of the group's own, and spec as
// etc/kiln/pipelines/<name>.yaml. done removes the namespace's containers
// and the folder; ns is the namespace.
func loopRoot(ctx context.Context, addr, tag, name, spec string) (root, imgDir, ns string, done func(), err error) {
	root, err = os.MkdirTemp("/var/tmp", "k"+tag)
	if err != nil {
		return "", "", "", nil, err
	}
	ns = fmt.Sprintf("kiln-bench-%s-%d", tag, os.Getpid())
	done = func() {
		cleanNamespace(addr, ns)
		_ = os.RemoveAll(root) // best-effort cleanup of scratch state
	}
	imgDir = filepath.Join(root, "images")
	if _, err = images.BuildAll(ctx, imgDir, images.Examples); err != nil {
		done()
		return "", "", "", nil, fmt.Errorf("build example images: %w", err)
	}
	err = os.MkdirAll(filepath.Join(root, "etc/kiln/pipelines"), 0o755)
	if err == nil {
		err = os.WriteFile(filepath.Join(root, "etc/kiln/kiln.yaml"), []byte("containerd: {address: "+addr+", namespace: "+ns+"}\n"), 0o644) //nolint:gosec // G703: a fixed name under the scratch folder MkdirTemp just made
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(root, "etc/kiln/pipelines", name+".yaml"), []byte(spec), 0o644) //nolint:gosec // G703: as above
	}
	if err != nil {
		done()
		return "", "", "", nil, err
	}
	return root, imgDir, ns, done, nil
}

// loopKilnd is kilnd running on a loopRoot, the example images imported.
type loopKilnd struct {
	root, ns string
	proc     *exec.Cmd
	c        *apiclient.Client
}

// startLoop makes a loopRoot, starts kilnd on it and imports the example
// images; stop stops kilnd and removes the root.
func startLoop(ctx context.Context, kilnd, addr, tag, name, spec string) (*loopKilnd, func(), error) {
	root, imgDir, ns, cleanup, err := loopRoot(ctx, addr, tag, name, spec)
	if err != nil {
		return nil, nil, err
	}
	_, proc, err := startKilnd(ctx, kilnd, root)
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	stop := func() {
		_ = stopKilnd(proc) // best effort: the root goes next
		cleanup()
	}
	c := apiclient.New(filepath.Join(root, "run/kiln/kiln.sock"))
	if err := importExamples(ctx, c, imgDir); err != nil {
		stop()
		return nil, nil, err
	}
	return &loopKilnd{root: root, ns: ns, proc: proc, c: c}, stop, nil
}

// importExamples imports the example images built under imgDir.
func importExamples(ctx context.Context, c *apiclient.Client, imgDir string) error {
	for _, f := range []string{"tabular-trainer.tar", "tabular-server.tar"} {
		fh, err := os.Open(filepath.Join(imgDir, f))
		if err != nil {
			return err
		}
		_, err = c.ImportImages(ctx, fh)
		_ = fh.Close() // read only
		if err != nil {
			return fmt.Errorf("import %s: %w", f, err)
		}
	}
	return nil
}
