package runtime

import (
	"strconv"
	"strings"
	"testing"
)

func TestContainerIDFormat(t *testing.T) {
	got := ContainerID(KindServe, "3f9a2c1b77e04d5e9c1a2b3c4d5e6f70", "iris/m7", "sha256:ab12cd34ef")
	if want := "kiln-serve-3f9a2c1b-ab12cd34-iris-m7"; got != want {
		t.Errorf("ContainerID(serve, iris/m7) = %q; want %q", got, want)
	}
	if got := ContainerID(KindTrain, "", "iris/r9", ""); got != "kiln-train-none-none-iris-r9" {
		t.Errorf("ContainerID without identity = %q; want kiln-train-none-none-iris-r9", got)
	}
}

// TestContainerIDFitsAndNeverCollides: every name is a valid containerd ID
// of at most 64 bytes, for the longest pipeline names config allows
// ([a-z0-9-]{1,32}) and the largest record numbers, and differs whenever
// the installation, the digest, the kind or the kiln ID differ.
func TestContainerIDFitsAndNeverCollides(t *testing.T) {
	long := strings.Repeat("p", 32)
	ids := []string{
		"iris/m7", "iris/m70", "iri/s-m7", "a-b/m1", "a--b/m1", "-a-/m1", "--/m1", "0/m1",
		long + "/m1", long + "/m" + strconv.FormatUint(1<<64-1, 10), long + "/r" + strconv.FormatUint(1<<64-1, 10),
		strings.Repeat("p", 31) + "q/m" + strconv.FormatUint(1<<64-1, 10),
		strings.Repeat("-", 32) + "/m" + strconv.FormatUint(1<<64-1, 10),
		"iris/m7:eval", "iris/m7-eval", "noslash",
	}
	installs := []string{"3f9a2c1b77e04d5e9c1a2b3c4d5e6f70", "8d0e41aa00000000000000000000000", ""}
	digests := []string{"sha256:ab12cd34ef", "sha256:ffffffff00", ""}
	seen := map[string]string{}
	for _, kind := range []string{KindTrain, KindServe} {
		for _, inst := range installs {
			for _, dig := range digests {
				for _, id := range ids {
					name := ContainerID(kind, inst, id, dig)
					if len(name) > 64 || !idRE.MatchString(name) {
						t.Errorf("ContainerID(%s, %q, %q, %q) = %q (%d bytes); want a containerd ID of at most 64 bytes", kind, inst, id, dig, name, len(name))
					}
					key := kind + " " + inst + " " + id + " " + dig
					if prev, ok := seen[name]; ok {
						t.Errorf("ContainerID(%s) = %q, the same as for %s", key, name, prev)
					}
					seen[name] = key
					if again := ContainerID(kind, inst, id, dig); again != name {
						t.Errorf("ContainerID(%s) = %q then %q; want it stable", key, name, again)
					}
				}
			}
		}
	}
}
