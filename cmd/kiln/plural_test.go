package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func TestPlural(t *testing.T) {
	for _, tc := range []struct {
		got, want string
	}{
		{plural(1, "pipeline"), "1 pipeline"},
		{plural(0, "pipeline"), "0 pipelines"},
		{plural(int64(2), "row"), "2 rows"},
		{plural(uint64(1), "byte"), "1 byte"},
		{plural(3, "MIG device"), "3 MIG devices"},
		{plural(2, "index", "indexes"), "2 indexes"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q; want %q", tc.got, tc.want)
		}
	}
}

// hardPlural finds a count verb followed by a fixed noun: "%d pipelines"
// prints "1 pipelines", "%d GPU" prints "2 GPU". "%d of %d checks" and
// numbers in tables ("%d\t") are not counts with nouns.
var hardPlural = regexp.MustCompile(`%d (?:[a-z]+ )?(?:[a-z]+s|GPU)\b`)

// TestCountsArePlural reads the CLI's own source: no format string may fix
// the noun after a count; plural() chooses it.
func TestCountsArePlural(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(lit.Value)
			if err != nil {
				return true
			}
			for _, m := range hardPlural.FindAllString(s, -1) {
				if strings.HasPrefix(m, "%d of ") {
					continue
				}
				t.Errorf("%s: %q: use plural() for the noun after a count", fset.Position(lit.Pos()), m)
			}
			return true
		})
	}
}
