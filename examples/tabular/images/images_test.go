package images

import (
	"context"
	"testing"
	"time"
)

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
