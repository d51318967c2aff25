package runtime

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/runtime/ocitar"
)

func TestImportListResolve(t *testing.T) {
	r := newTestRuntime(t)
	ctx := testCtx(t, 2*time.Minute)

	// OCI archive made by kiln's builder.
	var progress []int64
	f, err := os.Open(archives.server.File)
	if err != nil {
		t.Fatal(err)
	}
	ims, err := r.Import(ctx, f, func(n int64) { progress = append(progress, n) })
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(archives.server.File)
	if len(progress) == 0 || progress[len(progress)-1] != st.Size() {
		t.Errorf("progress = %v; want it to end at the archive size %d", progress, st.Size())
	}
	names := imageNames(ims)
	if !slices.Contains(names, archives.server.Ref) || !slices.Contains(names, archives.server.Digest) {
		t.Errorf("Import() names = %v; want the tag %s and the pin %s", names, archives.server.Ref, archives.server.Digest)
	}

	// A `docker save` archive.
	ims = importFile(t, r, archives.testboxDocker)
	if !slices.Contains(imageNames(ims), testboxDockerRef) {
		t.Errorf("docker archive import names = %v; want %s", imageNames(ims), testboxDockerRef)
	}
	got, err := r.Resolve(ctx, testboxDockerRef)
	if err != nil {
		t.Fatal(err)
	}
	// The docker form stores docker media types, so its digest differs from
	// the OCI one; resolving by that digest works too.
	if again, err := r.Resolve(ctx, got); err != nil || again != got {
		t.Errorf("Resolve(%s) = %s, %v; want itself", got, again, err)
	}

	for ref, want := range map[string]string{
		archives.trainer.Ref:    archives.trainer.Digest,
		archives.trainer.Digest: archives.trainer.Digest,
		"kiln.local/tabular-trainer@" + archives.trainer.Digest: archives.trainer.Digest,
	} {
		if got, err := r.Resolve(ctx, ref); err != nil || got != want {
			t.Errorf("Resolve(%s) = %s, %v; want %s", ref, got, err, want)
		}
	}
	_, err = r.Resolve(ctx, "kiln.local/nope:3")
	if !errors.Is(err, ErrImageNotFound) || !strings.Contains(err.Error(), "kiln.local/nope:3") {
		t.Errorf("Resolve(missing) = %v; want ErrImageNotFound naming it", err)
	}

	list, err := r.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range list {
		if im.Name == archives.trainer.Ref && (im.Digest != archives.trainer.Digest || im.Size == 0 || im.Pinned) {
			t.Errorf("List() entry %+v; want digest %s, a size, not pinned", im, archives.trainer.Digest)
		}
	}
}

// TestImportCtrExport imports an archive made outside kiln: the private
// containerd's own `ctr images export`, from another namespace, retagged.
func TestImportCtrExportAndGC(t *testing.T) {
	r := newTestRuntime(t)
	ctx := testCtx(t, 2*time.Minute)
	ctr, err := exec.LookPath("ctr")
	if err != nil {
		const why = "ctr is not installed (it comes with containerd: make deps)"
		if os.Getenv("KILN_REQUIRE_REAL") == "1" {
			t.Fatal("KILN_REQUIRE_REAL=1 but: " + why)
		}
		t.Skip(why)
	}
	addr := r.Address()
	const other, ref = "kiln-test-other", "kiln.local/made-by-ctr:7"
	run := func(args ...string) {
		t.Helper()
		out, err := exec.CommandContext(ctx, ctr, append([]string{"-a", addr, "-n", other}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("ctr %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	run("images", "import", archives.testbox.File)
	run("images", "tag", "--force", testboxRef, ref)
	exported := filepath.Join(scratch(t), "ctr.tar")
	run("images", "export", exported, ref)
	t.Cleanup(func() { _ = exec.Command(ctr, "-a", addr, "-n", other, "images", "rm", testboxRef, ref).Run() })

	ims := importFile(t, r, exported)
	if !slices.Contains(imageNames(ims), ref) {
		t.Fatalf("ctr export import names = %v; want %s", imageNames(ims), ref)
	}
	// It runs.
	id := uniqueID("ctr")
	cleanupTask(t, r, id)
	task, err := r.Train(ctx, TrainSpec{Common: Common{ID: id, Image: ref, LogFile: filepath.Join(scratch(t), "log"),
		Args: []string{"lines", "1", "1ms", "0"}}, Workspace: scratch(t)})
	if err != nil {
		t.Fatal(err)
	}
	if exit, err := task.Wait(ctx); err != nil || !exit.OK() {
		t.Fatalf("Wait() = %+v, %v", exit, err)
	}
	if err := task.Delete(ctx); err != nil {
		t.Fatal(err)
	}

	// GC keeps what is listed and removes the rest: an image of its own
	// (the ctr copy above shares the testbox's digest, which stays).
	img, err := ocitar.Build(ocitar.Spec{Files: []ocitar.File{{Path: "/hello", Data: []byte("gc me")}}, Cmd: []string{"/hello"}})
	if err != nil {
		t.Fatal(err)
	}
	const gcRef = "kiln.local/gc-me:1"
	gcFile := filepath.Join(scratch(t), "gc.tar")
	if err := ocitar.WriteOCI(gcFile, gcRef, img); err != nil {
		t.Fatal(err)
	}
	importFile(t, r, gcFile)
	gcDigest, _ := ocitar.Digest(img)
	keep := []string{archives.trainer.Digest, archives.server.Digest, archives.testbox.Digest}
	if d, err := r.Resolve(ctx, testboxDockerRef); err == nil {
		keep = append(keep, d)
	}
	removed, err := r.GC(ctx, keep)
	if err != nil {
		t.Fatal(err)
	}
	if names := imageNames(removed); !slices.Contains(names, gcRef) || !slices.Contains(names, gcDigest) {
		t.Errorf("GC removed %v; want %s and its pin", names, gcRef)
	}
	if _, err := r.Resolve(ctx, gcRef); !errors.Is(err, ErrImageNotFound) {
		t.Errorf("Resolve(%s) after GC = %v; want ErrImageNotFound", gcRef, err)
	}
	for _, d := range keep {
		if _, err := r.Resolve(ctx, d); err != nil {
			t.Errorf("GC dropped a kept digest %s: %v", d, err)
		}
	}
}

func imageNames(ims []Image) []string {
	var out []string
	for _, im := range ims {
		out = append(out, im.Name)
	}
	return out
}
