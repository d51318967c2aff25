package images

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestExamplesDistinct: every example has its own tag, archive and binary,
// and the tabular pair stays first (the runtime tests take Examples[0:2]).
func TestExamplesDistinct(t *testing.T) {
	seen := map[string]string{}
	for _, im := range Examples {
		for _, k := range []string{"ref " + im.Ref, "file " + im.File, "binary " + im.Binary, "package " + im.Package} {
			if prev, dup := seen[k]; dup {
				t.Errorf("%s: %s is also %s's", im.Ref, k, prev)
			}
			seen[k] = im.Ref
		}
		if !strings.HasSuffix(im.File, ".tar") || len(im.Cmd) != 1 {
			t.Errorf("%+v: want a .tar file and one verb", im)
		}
	}
	if len(Examples) < 4 || Examples[0].Ref != TrainerRef || Examples[1].Ref != ServerRef ||
		Examples[2].Ref != ImageTrainerRef || Examples[3].Ref != ImageServerRef {
		t.Errorf("Examples order: want tabular trainer, server, image trainer, server first")
	}
}

// TestReproducibleDigests builds the example images twice: same source and
// toolchain, same digests.
func TestReproducibleDigests(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two binaries twice")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	a, err := BuildAll(ctx, t.TempDir(), Examples)
	if err != nil {
		t.Fatal(err)
	}
	b, err := BuildAll(ctx, t.TempDir(), Examples)
	if err != nil {
		t.Fatal(err)
	}
	for i := range a {
		if a[i].Digest != b[i].Digest || a[i].Ref != Examples[i].Ref {
			t.Errorf("%s: digests %s and %s; want one", a[i].Ref, a[i].Digest, b[i].Digest)
		}
	}
}
