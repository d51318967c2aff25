package daemon

import (
	"os/exec"
	"path"
	"strings"
	"testing"
)

const module = "github.com/kiln-edge/kiln"

// allowedImports is DESIGN.md's "direction of imports" for the packages that
// must stay leaves: each may import, of kiln's own packages, only its own
// subtree and those listed. Tests may import more (fixtures, example images).
var allowedImports = map[string][]string{
	"runtime":               nil,
	"gpu":                   nil,
	"storage":               nil,
	"systemd":               nil,
	"daemon/config":         nil,
	"daemon/api":            nil,
	"daemon/contract":       nil,
	"daemon/monitor/detect": nil,
	"daemon/serve":          {"daemon/contract"},
	"daemon/apiclient":      {"daemon/api"},
	"daemon/localapi":       {"daemon/api"},
	"daemon/ui":             {"daemon/api"},
	"cmd/kiln":              {"daemon/api", "daemon/apiclient", "daemon/config", "daemon/contract", "daemon/ui/chart", "storage/atomicfile"},
}

// TestLeavesImportOnlyWhatDesignAllows keeps the layering honest: the leaves
// never import daemon or each other, and no daemon/* package imports the
// composition root, so each part can be tested, and changed, on its own.
func TestLeavesImportOnlyWhatDesignAllows(t *testing.T) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		goCmd = "/usr/local/go/bin/go"
	}
	out, err := exec.Command(goCmd, "list", "-f", "{{.ImportPath}}{{range .Imports}} {{.}}{{end}}", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	checked := map[string]bool{}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) < 20 {
		t.Fatalf("go list returned %d packages; the check would be vacuous", len(lines))
	}
	for _, line := range lines {
		f := strings.Fields(line)
		pkg := strings.TrimPrefix(f[0], module+"/")
		rule, ruled := ruleFor(pkg)
		for _, imp := range f[1:] {
			if !strings.HasPrefix(imp, module+"/") {
				continue
			}
			dep := strings.TrimPrefix(imp, module+"/")
			if strings.HasPrefix(pkg, "daemon/") && dep == "daemon" {
				t.Errorf("%s imports the composition root daemon", pkg)
			}
			if !ruled || within(dep, rule) {
				continue
			}
			t.Errorf("%s imports %s; DESIGN.md allows only its own subtree and %v", pkg, dep, allowedImports[rule])
		}
		if ruled {
			checked[rule] = true
		}
	}
	for rule := range allowedImports {
		if !checked[rule] {
			t.Errorf("no package %s found: the rule is stale or the listing broke", rule)
		}
	}
}

// ruleFor finds the rule for pkg: its own entry, or the nearest ruled parent
// (runtime/ocitar follows runtime's). daemon/monitor/detect has its own.
func ruleFor(pkg string) (string, bool) {
	for p := pkg; p != "." && p != ""; p = path.Dir(p) {
		if _, ok := allowedImports[p]; ok {
			return p, true
		}
	}
	return "", false
}

// within reports whether dep is in rule's subtree or among its allowed imports.
func within(dep, rule string) bool {
	if dep == rule || strings.HasPrefix(dep, rule+"/") {
		return true
	}
	for _, a := range allowedImports[rule] {
		if dep == a {
			return true
		}
	}
	return false
}
