package main

import (
	"archive/tar"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/kiln-edge/kiln/examples/tabular/images"
	"github.com/kiln-edge/kiln/runtime"
	"github.com/kiln-edge/kiln/runtime/ocitar"
)

func init() { register(Group{Name: "runtime", Run: benchRuntime}) }

const (
	figStartVsRunc = "runtime.start_vs_runc"
	figStartP50    = "runtime.start_p50_ms"
)

// benchRuntime measures kiln's task create+start (image unpacked, so the
// snapshot is ready to prepare) against `runc create` + `runc start` of the
// same bundle (the spec kiln generated, on the same image's root
// filesystem), alternating in one run.
func benchRuntime(ctx context.Context, opt Options) []Figure {
	fail := func(why string) []Figure {
		return []Figure{unmeasured(figStartVsRunc, "x", "<= 2", why), unmeasured(figStartP50, "ms", "<= 150", why)}
	}
	addr := os.Getenv("KILN_TEST_CONTAINERD")
	if addr == "" {
		return fail("no private containerd: KILN_TEST_CONTAINERD is not set (run `make bench`, which starts one as root)")
	}
	runc, err := exec.LookPath("runc")
	if err != nil {
		return fail("runc is not installed (`make deps`)")
	}
	// p90 in detail wants >= 100 samples (BENCH.md's 10x rule); a round
	// takes about half a second.
	rounds := 100
	if opt.Quick {
		rounds = 6
	}
	dir, err := os.MkdirTemp("", "kb")
	if err != nil {
		return fail(err.Error())
	}
	defer func() { _ = os.RemoveAll(dir) }() // best-effort cleanup of scratch data

	// The image: testbox, whose `sleep` keeps the task up until killed.
	im := images.Image{Ref: "kiln.local/bench:1", Package: "github.com/kiln-edge/kiln/runtime/testdata/testbox",
		Binary: "testbox", Cmd: []string{"sleep", "1h"}, File: "bench.tar"}
	bin, err := images.GoBinary(ctx, im.Package)
	if err != nil {
		return fail("build the bench image: " + err.Error())
	}
	img, err := ocitar.Build(images.Spec(im, bin))
	if err != nil {
		return fail(err.Error())
	}
	archive := filepath.Join(dir, im.File)
	if err := ocitar.WriteOCI(archive, im.Ref, img); err != nil {
		return fail(err.Error())
	}
	rt, err := runtime.New(addr, "kiln-bench", slog.New(slog.DiscardHandler))
	if err != nil {
		return fail(err.Error())
	}
	defer func() { _ = rt.Close() }() // the containerd client: a close error changes no figure
	f, err := os.Open(archive)
	if err != nil {
		return fail(err.Error())
	}
	_, err = rt.Import(ctx, f, nil)
	_ = f.Close() // opened read-only
	if err != nil {
		return fail(err.Error())
	}

	spec := func(i int) runtime.TrainSpec {
		id := fmt.Sprintf("bench-%d-%d", os.Getpid(), i)
		return runtime.TrainSpec{Common: runtime.Common{ID: id, Image: im.Ref, Args: []string{"sleep", "1h"},
			LogFile: filepath.Join(dir, "logs", id+".log")}, Workspace: filepath.Join(dir, "ws", id)}
	}
	startKiln := func(i int) (time.Duration, *runtime.Task, error) {
		t0 := time.Now()
		task, err := rt.Train(ctx, spec(i))
		return time.Since(t0), task, err
	}
	stopKiln := func(task *runtime.Task) {
		_, _ = task.Stop(ctx, 50*time.Millisecond)
		_ = task.Delete(ctx)
	}

	// The runc bundle: kiln's own spec for this image, on its layer. This
	// first, untimed start is also kiln's warm-up.
	_, first, err := startKiln(0)
	if err != nil {
		return fail("kiln start: " + err.Error())
	}
	ociSpec, err := first.Spec(ctx)
	stopKiln(first)
	if err != nil {
		return fail(err.Error())
	}
	bundle := filepath.Join(dir, "bundle")
	if err := extractLayers(img, filepath.Join(bundle, "rootfs")); err != nil {
		return fail(err.Error())
	}
	ociSpec.Root.Path = "rootfs"
	runcRoot := filepath.Join(dir, "runc")
	runcRun := func(args ...string) error {
		cmd := exec.CommandContext(ctx, runc, append([]string{"--root", runcRoot}, args...)...)
		cmd.Dir = bundle
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("runc %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	startRunc := func(i int) (time.Duration, error) {
		id := fmt.Sprintf("bench-runc-%d-%d", os.Getpid(), i)
		ociSpec.Linux.CgroupsPath = "/kiln-bench-runc/" + id
		b, err := json.Marshal(ociSpec)
		if err != nil {
			return 0, err
		}
		if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o644); err != nil {
			return 0, err
		}
		t0 := time.Now()
		// stdio is /dev/null: runc's init inherits it and holds it until
		// start, so a pipe here would never reach EOF. Errors go to --log.
		cmd := exec.CommandContext(ctx, runc, "--root", runcRoot, "--log", filepath.Join(dir, "runc.log"), "create", "--bundle", bundle, id)
		if err := cmd.Run(); err != nil {
			b, _ := os.ReadFile(filepath.Join(dir, "runc.log"))
			return 0, fmt.Errorf("runc create: %v: %s", err, runcLastLine(string(b)))
		}
		if err := runcRun("start", id); err != nil {
			return 0, err
		}
		d := time.Since(t0)
		_ = runcRun("kill", id, "KILL")
		for range 50 {
			if runcRun("delete", id) == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		return d, nil
	}

	kilnRound := func(i int) (float64, error) {
		d, task, err := startKiln(i)
		if err != nil {
			return 0, fmt.Errorf("kiln start: %w", err)
		}
		stopKiln(task)
		return float64(d.Microseconds()) / 1000, nil
	}
	runcRound := func(i int) (float64, error) {
		d, err := startRunc(i)
		return float64(d.Microseconds()) / 1000, err
	}
	// runc's untimed warm-up start: its first create pays for the bundle's
	// page cache and the cgroup parent's setup.
	if _, err := runcRound(0); err != nil {
		return fail(err.Error())
	}
	// Rounds alternate which side starts first: kiln on odd rounds, runc on
	// even ones, so neither always runs on the other's warm caches.
	var kiln, base []float64
	for i := 1; i <= rounds; i++ {
		sides := []func() error{
			func() error { ms, err := kilnRound(i); kiln = append(kiln, ms); return err },
			func() error { ms, err := runcRound(i); base = append(base, ms); return err },
		}
		if i%2 == 0 {
			sides[0], sides[1] = sides[1], sides[0]
		}
		for _, side := range sides {
			if err := side(); err != nil {
				return fail(err.Error())
			}
		}
	}
	kP50, kP90, rP50, rP90 := percentile(kiln, 50), percentile(kiln, 90), percentile(base, 50), percentile(base, 90)
	ratio := kP50 / rP50
	detail := fmt.Sprintf("ratio of p50s: kiln p50 %.1f ms p90 %.1f ms vs runc create+start p50 %.1f ms p90 %.1f ms, same bundle, %d rounds each, "+
		"a warm-up start for both, the side that goes first alternating", kP50, kP90, rP50, rP90, rounds)
	return []Figure{
		measured(figStartVsRunc, stRound(ratio, 2), "x", "<= 2", detail),
		measured(figStartP50, kP50, "ms", "<= 150", fmt.Sprintf("kiln create+start (container, snapshot, task, start) p50 of %d; p90 %.1f ms (runc p50 %.1f ms p90 %.1f ms)",
			rounds, kP90, rP50, rP90)),
	}
}

// extractLayers unpacks the image's layers into dir (folders and regular
// files are all ocitar writes).
func extractLayers(img v1.Image, dir string) error {
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			return err
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				_ = rc.Close() // read side of a layer; the tar error is the one to report
				return err
			}
			p := filepath.Join(dir, filepath.Clean("/"+h.Name))
			switch h.Typeflag {
			case tar.TypeDir:
				err = os.MkdirAll(p, h.FileInfo().Mode().Perm())
			case tar.TypeReg:
				var b []byte
				if b, err = io.ReadAll(tr); err == nil {
					if err = os.MkdirAll(filepath.Dir(p), 0o755); err == nil {
						err = os.WriteFile(p, b, h.FileInfo().Mode().Perm())
					}
				}
			}
			if err != nil {
				_ = rc.Close() // read side of a layer; the tar error is the one to report
				return err
			}
		}
		_ = rc.Close() // read side of a layer, read to the end
	}
	return nil
}

func runcLastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
