package docs

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"github.com/kiln-edge/kiln/daemon/config"
)

// tableRows reads page's keyed rows or fails the test.
func tableRows(t *testing.T, page string) []Row {
	t.Helper()
	rows, err := TableRows(page)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// mapKeyNames names the map keys of the spec in its key paths.
var mapKeyNames = map[string]string{"data.validate.ranges": "<column>"}

// yamlKeys lists the leaf keys of a config struct by its yaml tags, with
// the value each has in v (the defaults). A struct field whose type has
// yaml-tagged fields of its own is a group (recursed into); a struct
// without (Duration, Age) is a value.
func yamlKeys(prefix string, v reflect.Value, out map[string]reflect.Value) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		path := prefix + name
		fv := v.Field(i)
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
			if fv.IsNil() {
				fv = reflect.Zero(ft)
			} else {
				fv = fv.Elem()
			}
		}
		switch {
		case ft.Kind() == reflect.Struct && hasYAMLFields(ft):
			yamlKeys(path+".", fv, out)
		case ft.Kind() == reflect.Map && ft.Elem().Kind() == reflect.Struct:
			k := mapKeyNames[path]
			if k == "" {
				k = "<key>"
			}
			yamlKeys(path+"."+k+".", reflect.Zero(ft.Elem()), out)
		default:
			out[path] = v.Field(i)
		}
	}
}

func hasYAMLFields(t reflect.Type) bool {
	for i := 0; i < t.NumField(); i++ {
		if n := t.Field(i).Tag.Get("yaml"); n != "" && n != "-" {
			return true
		}
	}
	return false
}

// format writes a default as the reference tables do.
func format(v reflect.Value) string {
	if s, ok := v.Interface().(fmt.Stringer); ok {
		return s.String()
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return ""
		}
		return format(v.Elem())
	case reflect.Slice:
		var parts []string
		for i := 0; i < v.Len(); i++ {
			parts = append(parts, format(v.Index(i)))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case reflect.Map:
		if v.Len() == 0 {
			return "{}"
		}
		return fmt.Sprint(v.Interface())
	}
	return fmt.Sprint(v.Interface())
}

// checkKeys holds a reference page to a config struct: every key has a
// row, every row is a key, each row has cells for the type, the default
// and what it does, and a default written as one backticked value is the
// one the code applies (one written "unset" or "required" must be empty).
func checkKeys(t *testing.T, page string, keys map[string]reflect.Value) {
	t.Helper()
	documented := map[string]bool{}
	for _, r := range tableRows(t, page) {
		documented[r.Key] = true
		v, ok := keys[r.Key]
		if !ok {
			t.Errorf("%s:%d: `%s` is not a key of the code", page, r.Line, r.Key)
			continue
		}
		if len(r.Cells) < 4 {
			t.Errorf("%s:%d: `%s`: want cells key | type | default | what, got %d", page, r.Line, r.Key, len(r.Cells))
			continue
		}
		def, got := r.Cells[2], format(v)
		if m := keyCell.FindStringSubmatch(def); m != nil {
			if m[1] != got {
				t.Errorf("%s:%d: `%s`: documented default %s, the code's is %q", page, r.Line, r.Key, def, got)
			}
		} else if (def == "unset" || def == "required") && !v.IsZero() && !(v.Kind() == reflect.Slice && v.Len() == 0) {
			t.Errorf("%s:%d: `%s`: documented %s, the code's default is %q", page, r.Line, r.Key, def, got)
		}
	}
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range keys {
			if !yield(k) {
				return
			}
		}
	}) {
		if !documented[k] {
			t.Errorf("%s: no row for key `%s`", page, k)
		}
	}
	if len(keys) < 10 {
		t.Fatalf("only %d keys found by reflection; the check would be vacuous", len(keys))
	}
}

// TestPipelineSpecKeysDocumented: every key of a pipeline spec, with its
// default, is in pipeline-spec.md.
func TestPipelineSpecKeysDocumented(t *testing.T) {
	spec := "name: x\ndata: {label: y}\ntrain: {image: t:1}\nserve: {image: s:1}\n"
	p, err := config.ParsePipeline("x.yaml", []byte(spec))
	if err != nil {
		t.Fatal(err)
	}
	p.Name = "" // the file's name, not a default
	p.Data.Label = ""
	p.Train.Image, p.Serve.Image = "", ""
	keys := map[string]reflect.Value{}
	yamlKeys("", reflect.ValueOf(*p), keys)
	checkKeys(t, "pipeline-spec.md", keys)
}

// TestDaemonConfigKeysDocumented: every key of kiln.yaml, with its
// default, is in configuration.md.
func TestDaemonConfigKeysDocumented(t *testing.T) {
	d, err := config.ParseDaemon("kiln.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]reflect.Value{}
	yamlKeys("", reflect.ValueOf(*d), keys)
	checkKeys(t, "configuration.md", keys)
}

// declaredMetrics finds the metric names kiln's code declares: the first
// argument of prometheus.NewDesc and the Name of prometheus.*Opts literals,
// in every non-test Go file of the module.
func declaredMetrics(t *testing.T) map[string]string {
	t.Helper()
	found := map[string]string{}
	fset := token.NewFileSet()
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); path != ".." && (strings.HasPrefix(n, ".") || n == "testdata" || n == "bin") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			var name ast.Expr
			switch n := n.(type) {
			case *ast.CallExpr:
				if isSel(n.Fun, "prometheus", "NewDesc") && len(n.Args) > 0 {
					name = n.Args[0]
				}
			case *ast.CompositeLit:
				if sel, ok := n.Type.(*ast.SelectorExpr); ok && isSel(sel, "prometheus", sel.Sel.Name) && strings.HasSuffix(sel.Sel.Name, "Opts") {
					for _, e := range n.Elts {
						if kv, ok := e.(*ast.KeyValueExpr); ok {
							if k, ok := kv.Key.(*ast.Ident); ok && (k.Name == "Name") {
								name = kv.Value
							}
							if k, ok := kv.Key.(*ast.Ident); ok && (k.Name == "Namespace" || k.Name == "Subsystem") {
								t.Errorf("%s: prometheus %s: this test reads whole names only", fset.Position(kv.Pos()), k.Name)
							}
						}
					}
				}
			}
			if name == nil {
				return true
			}
			lit, ok := name.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				t.Errorf("%s: a metric name that is not a string literal; metrics.md cannot be checked against it", fset.Position(name.Pos()))
				return true
			}
			s, _ := strconv.Unquote(lit.Value)
			found[s] = fset.Position(name.Pos()).String()
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

func isSel(e ast.Expr, pkg, name string) bool {
	sel, ok := e.(*ast.SelectorExpr)
	if !ok || sel.Sel.Name != name {
		return false
	}
	id, ok := sel.X.(*ast.Ident)
	return ok && id.Name == pkg
}

// documentedMetrics reads the metric names metrics.md's tables list; a
// name ending in * stands for a family the Go client declares (go_*).
func documentedMetrics(t *testing.T) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, r := range tableRows(t, "metrics.md") {
		out[r.Key] = r.Line
	}
	return out
}

// TestMetricsDocumented: every metric kiln's code declares has a row in
// metrics.md, and every row is a metric the code declares (or a family of
// the Go client's collectors). The daemon's TestMetricsRegistryDocumented
// checks what a running kilnd's registry gathers against the same page.
func TestMetricsDocumented(t *testing.T) {
	declared := declaredMetrics(t)
	documented := documentedMetrics(t)
	if len(declared) < 20 {
		t.Fatalf("found only %d metric declarations; the check would be vacuous", len(declared))
	}
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range declared {
			if !yield(k) {
				return
			}
		}
	}) {
		if _, ok := documented[name]; !ok {
			t.Errorf("metrics.md: no row for %s (declared at %s)", name, declared[name])
		}
	}
	for name, line := range documented {
		if _, ok := declared[name]; !ok && !strings.HasSuffix(name, "*") {
			t.Errorf("metrics.md:%d: %s is declared nowhere in the code", line, name)
		}
	}
}

// TestSpecExamplesLoad: every spec example in pipeline-spec.md (a yaml
// block whose first line names its file) loads as it is.
func TestSpecExamplesLoad(t *testing.T) {
	b, err := os.ReadFile("pipeline-spec.md")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, block := range strings.Split(string(b), "```yaml\n")[1:] {
		body, _, _ := strings.Cut(block, "```")
		first, _, _ := strings.Cut(body, "\n")
		file, ok := strings.CutPrefix(first, "# /etc/kiln/pipelines/")
		if !ok {
			continue
		}
		n++
		if _, err := config.ParsePipeline(file, []byte(body)); err != nil {
			t.Errorf("pipeline-spec.md: the example %s does not load: %v", file, err)
		}
	}
	if n == 0 {
		t.Error("pipeline-spec.md: no example spec found")
	}
}

var (
	mdLink    = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	mdHeading = regexp.MustCompile(`(?m)^#{1,6} (.+)$`)
)

// slug is GitHub's anchor for a heading.
func slug(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// TestLinksResolve: every relative link in README.md and the pages names a
// file that exists, and an anchor a heading of it.
func TestLinksResolve(t *testing.T) {
	pages, _ := filepath.Glob("*.md")
	pages = append(pages, filepath.Join("..", "README.md"))
	n := 0
	for _, page := range pages {
		b, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range mdLink.FindAllStringSubmatch(string(b), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			n++
			file, anchor, _ := strings.Cut(target, "#")
			path := page
			if file != "" {
				path = filepath.Join(filepath.Dir(page), file)
			}
			body, err := os.ReadFile(path)
			if err != nil {
				t.Errorf("%s: link %s: %v", page, target, err)
				continue
			}
			if anchor == "" {
				continue
			}
			found := false
			for _, h := range mdHeading.FindAllStringSubmatch(string(body), -1) {
				found = found || slug(h[1]) == anchor
			}
			if !found {
				t.Errorf("%s: link %s: no heading with that anchor in %s", page, target, path)
			}
		}
	}
	if n < 10 {
		t.Errorf("only %d relative links found; the check would be vacuous", n)
	}
}
