package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The README's installed-site quick start is the test's script: the command
// blocks between these markers run in the booted machine one command at a
// time, as root or as a member of group kiln as each block's first line says,
// so the README cannot drift from what works on an installed box.
const (
	quickstartBegin = "<!-- quickstart:installed begin -->"
	quickstartEnd   = "<!-- quickstart:installed end -->"
	// quickstartUser is the account the "group kiln" blocks run as.
	quickstartUser = "kilnop"
)

// qsCommand is one command of the quick start.
type qsCommand struct {
	line   int  // in README.md
	asRoot bool // else as a member of group kiln
	cmd    string
}

// readQuickstart extracts the commands of the ```sh blocks between the
// markers. Each block starts with "# as root" or "# as a user in group kiln";
// comment and blank lines are skipped, a trailing backslash continues a line.
func readQuickstart(readme []byte) ([]qsCommand, error) {
	var (
		cmds            []qsCommand
		inside, inBlock bool
		haveUser        bool
		asRoot          bool
		cont            *qsCommand
		begun, ended    bool
	)
	sc := bufio.NewScanner(bytes.NewReader(readme))
	for n := 1; sc.Scan(); n++ {
		l := sc.Text()
		trimmed := strings.TrimSpace(l)
		switch {
		case trimmed == quickstartBegin:
			inside, begun = true, true
			continue
		case trimmed == quickstartEnd:
			if inBlock {
				return nil, fmt.Errorf("README.md:%d: quick start ends inside a code block", n)
			}
			inside, ended = false, true
			continue
		case !inside:
			continue
		case !inBlock && strings.HasPrefix(trimmed, "```"):
			if trimmed != "```sh" {
				return nil, fmt.Errorf("README.md:%d: quick-start block %q, want ```sh", n, trimmed)
			}
			inBlock, haveUser = true, false
			continue
		case inBlock && trimmed == "```":
			if cont != nil {
				return nil, fmt.Errorf("README.md:%d: the block ends on a continued line", n)
			}
			inBlock = false
			continue
		case !inBlock:
			continue
		}
		if !haveUser {
			switch {
			case strings.HasPrefix(trimmed, "# as root"):
				asRoot = true
			case strings.HasPrefix(trimmed, "# as a user in group kiln"):
				asRoot = false
			default:
				return nil, fmt.Errorf("README.md:%d: a quick-start block must start with \"# as root\" or \"# as a user in group kiln\", not %q", n, trimmed)
			}
			haveUser = true
			continue
		}
		if cont == nil && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		text, more := strings.CutSuffix(l, `\`)
		if cont != nil {
			cont.cmd += "\n" + text
		} else {
			cmds = append(cmds, qsCommand{line: n, asRoot: asRoot, cmd: text})
			cont = &cmds[len(cmds)-1]
		}
		if more {
			cont.cmd += `\`
		} else {
			cont = nil
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if !begun || !ended {
		return nil, fmt.Errorf("README.md: markers %q and %q not both found", quickstartBegin, quickstartEnd)
	}
	return cmds, nil
}

// sourceTree matches what only a source checkout or a developer box has.
var sourceTree = regexp.MustCompile(`(^|[\s<>@'"=])(bin|examples)/|\b(sudo|curl|make|go)\s`)

// redirect matches files a command reads (<f, @f) or writes (>f) by a
// relative name.
var (
	readsFile  = regexp.MustCompile(`[<@]\s*([A-Za-z0-9_.][^\s;|&)]*)`)
	writesFile = regexp.MustCompile(`[^2&]>\s*([A-Za-z0-9_.][^\s;|&)]*)`)
)

// TestQuickstartReadme checks the installed-site quick start without a
// machine: it parses, both kinds of user appear, it names no source-tree
// path and no tool a minimal Debian lacks (sudo, curl), and every file a
// command reads was written by an earlier one. TestSystemd runs it.
func TestQuickstartReadme(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	cmds, err := readQuickstart(readme)
	if err != nil {
		t.Fatal(err)
	}
	roles := map[bool]int{}
	written := map[string]bool{}
	for _, c := range cmds {
		roles[c.asRoot]++
		if m := sourceTree.FindString(c.cmd); m != "" {
			t.Errorf("README.md:%d: %q uses %q, which an installed box does not have", c.line, c.cmd, strings.TrimSpace(m))
		}
		for _, m := range readsFile.FindAllStringSubmatch(c.cmd, -1) {
			if m[1] != "/dev/null" && !written[m[1]] {
				t.Errorf("README.md:%d: %q reads %s, which no earlier step creates", c.line, c.cmd, m[1])
			}
		}
		for _, m := range writesFile.FindAllStringSubmatch(c.cmd, -1) {
			written[m[1]] = true
		}
	}
	if roles[true] == 0 || roles[false] == 0 {
		t.Errorf("quick start has %d root and %d group-kiln commands; want both", roles[true], roles[false])
	}

	// The parser itself: a block without its user line is refused.
	bad := []byte(quickstartBegin + "\n```sh\nkiln status\n```\n" + quickstartEnd + "\n")
	if _, err := readQuickstart(bad); err == nil || !strings.Contains(err.Error(), "README.md:3:") {
		t.Errorf("a block without \"# as ...\": err = %v, want one naming README.md:3", err)
	}
	cmds, err = readQuickstart([]byte(quickstartBegin + "\n```sh\n# as root\nprintf a \\\n  b\n```\n" + quickstartEnd + "\n"))
	if err != nil || len(cmds) != 1 || cmds[0].cmd != "printf a \\\n  b" || !cmds[0].asRoot || cmds[0].line != 4 {
		t.Errorf("continued line: %+v, %v", cmds, err)
	}
}

// shellQuote quotes s for sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// installedQuickstart runs the README's installed-site quick start in m, on
// a kiln installed by the offline bundle, and checks what it promises: five
// answers, a live cancer/m1, and about 4 s from the drop to the first answer.
func installedQuickstart(t *testing.T, ctx context.Context, m *machine) {
	readme, err := os.ReadFile(filepath.Join(repoRoot(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	cmds, err := readQuickstart(readme)
	if err != nil {
		t.Fatal(err)
	}
	m.must(ctx, "useradd --create-home --groups kiln "+quickstartUser)
	var dropped time.Time
	outputs := map[string]string{}
	for _, c := range cmds {
		script := "cd /root && " + c.cmd
		who := "root"
		if !c.asRoot {
			// A login shell: the account's groups, HOME and PATH, in HOME.
			script = "runuser -l " + quickstartUser + " -c " + shellQuote(c.cmd)
			who = quickstartUser + " (group kiln)"
		}
		start := time.Now()
		out, err := m.sh(ctx, script)
		took := time.Since(start)
		if err != nil {
			t.Fatalf("README.md:%d as %s: %s: %v\n%s", c.line, who, c.cmd, err, lastLines(out, 20))
		}
		t.Logf("README.md:%d as %s (%.1fs): %s\n%s", c.line, who, took.Seconds(), c.cmd, lastLines(out, 6))
		switch {
		case strings.Contains(c.cmd, "/var/lib/kiln/drop/"):
			dropped = time.Now()
		case strings.Contains(c.cmd, "kiln predict"):
			if dropped.IsZero() {
				t.Fatalf("README.md:%d: kiln predict before anything was dropped", c.line)
			}
			t.Logf("drop -> first answer: %.1fs", time.Since(dropped).Seconds())
		}
		for _, k := range []string{"kiln predict", "kiln models"} {
			if strings.Contains(c.cmd, k) {
				outputs[k] = out
			}
		}
	}
	labels := strings.Fields(outputs["kiln predict"])
	if len(labels) != 5 {
		t.Errorf("kiln predict answered %d lines for 5 rows:\n%s", len(labels), outputs["kiln predict"])
	}
	for _, l := range labels {
		if l != "benign" && l != "malignant" {
			t.Errorf("kiln predict answered %q, want benign or malignant", l)
		}
	}
	if !regexp.MustCompile(`(?m)^cancer/m1\s+live\s`).MatchString(outputs["kiln models"]) {
		t.Errorf("kiln models -p cancer does not show cancer/m1 live:\n%s", outputs["kiln models"])
	}
}
