package daemon

import (
	"go/parser"
	"go/token"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestEveryPackageHasADocComment: every package says what it owns.
func TestEveryPackageHasADocComment(t *testing.T) {
	root := ".."
	checked := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		name := d.Name()
		if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "bin") {
			return filepath.SkipDir
		}
		// The non-test .go files of this directory, grouped by package
		// name: whether any of each package's files has a doc comment.
		ents, err := os.ReadDir(path)
		if err != nil {
			return err
		}
		fset := token.NewFileSet()
		documented := map[string]bool{}
		for _, e := range ents {
			file := e.Name()
			if e.IsDir() || !strings.HasSuffix(file, ".go") || strings.HasSuffix(file, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(fset, filepath.Join(path, file), nil, parser.PackageClauseOnly|parser.ParseComments)
			if err != nil {
				return err
			}
			doc := f.Doc != nil && strings.TrimSpace(f.Doc.Text()) != ""
			documented[f.Name.Name] = documented[f.Name.Name] || doc
		}
		for _, pkgName := range slices.Sorted(maps.Keys(documented)) {
			if pkgName == "tools" {
				continue // build-tagged dependency pin, not a package of kiln
			}
			checked++
			if !documented[pkgName] {
				t.Errorf("package %s (%s) has no doc comment saying what it owns", pkgName, path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 8 {
		t.Fatalf("checked only %d packages; the walk is broken", checked)
	}
}
