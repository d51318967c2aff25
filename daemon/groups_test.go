package daemon

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestAdminOnlyMembers: doctor names the members of kiln-admin who are not
// in kiln (they cannot drop data or reach an endpoint socket), and says so
// when a group is missing.
func TestAdminOnlyMembers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "group")
	db := "root:x:0:\nkiln:x:998:alice,carol\nkiln-admin:x:997:alice,bob,dave\nusers:x:100:bob\n"
	if err := os.WriteFile(path, []byte(db), 0o644); err != nil {
		t.Fatal(err)
	}
	only, err := adminOnlyMembers(path, "kiln", "kiln-admin")
	if err != nil || !slices.Equal(only, []string{"bob", "dave"}) {
		t.Errorf("adminOnlyMembers = %v, %v; want [bob dave]", only, err)
	}
	if only, err := adminOnlyMembers(path, "users", "root"); err != nil || len(only) != 0 {
		t.Errorf("adminOnlyMembers of an empty admin group = %v, %v; want none", only, err)
	}
	if _, err := adminOnlyMembers(path, "kiln", "kiln-ops"); err == nil || !strings.Contains(err.Error(), "group kiln-ops is not in") {
		t.Errorf("adminOnlyMembers with a missing group = %v; want it named", err)
	}
}
