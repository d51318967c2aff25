package main

//go:generate go test -run ^TestGeneratedDocs$ . -args -update-docs

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kiln-edge/kiln/docs"
)

var updateDocs = flag.Bool("update-docs", false, "write docs/cli.md and packaging/man/{kiln.1,kilnd.8} instead of comparing them")

// generatedDocs renders docs/cli.md and the two man pages from kong's model
// of this CLI (built by parse, with the options kiln runs with), kilnd's
// flag definitions and the prose in docs/man/.
func generatedDocs(t *testing.T) map[string]string {
	t.Helper()
	root := filepath.Join("..", "..")
	var c cli
	kctx, code := parse(&c, []string{"status"}, io.Discard)
	if kctx == nil {
		t.Fatalf("parse: exit %d", code)
	}
	kiln, err := docs.ReadProse(filepath.Join(root, "docs", "man", "kiln.1.md"))
	if err != nil {
		t.Fatal(err)
	}
	kiln.AddKong(kctx.Model)
	kilnd, err := docs.ReadProse(filepath.Join(root, "docs", "man", "kilnd.8.md"))
	if err != nil {
		t.Fatal(err)
	}
	if err := kilnd.AddGoFlags(filepath.Join(root, "cmd", "kilnd", "main.go")); err != nil {
		t.Fatal(err)
	}
	return map[string]string{
		filepath.Join(root, "docs", "cli.md"):              docs.CLIMarkdown(kiln, kilnd),
		filepath.Join(root, "packaging", "man", "kiln.1"):  kiln.Roff(),
		filepath.Join(root, "packaging", "man", "kilnd.8"): kilnd.Roff(),
	}
}

// TestGeneratedDocs fails when a committed command-line page differs from
// what the code renders: a command, flag or help text changed without
// `go generate ./cmd/kiln`.
func TestGeneratedDocs(t *testing.T) {
	for path, want := range generatedDocs(t) {
		if *updateDocs {
			// CreateTemp's mode is 0600; the pages are read by everyone.
			if _, err := writeAtomic(path, func(w io.Writer) (int64, error) {
				if f, ok := w.(*os.File); ok {
					if err := f.Chmod(0o644); err != nil {
						return 0, err
					}
				}
				n, err := io.WriteString(w, want)
				return int64(n), err
			}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run `go generate ./cmd/kiln`)", err)
		}
		if string(got) != want {
			t.Errorf("%s is not what the code renders; run `go generate ./cmd/kiln` and commit it. First difference: %s",
				path, firstDiff(string(got), want))
		}
	}
}

// TestGeneratedDocsCoverTheCLI checks the renderer, not the files: every
// command of the CLI, every flag and every argument is in cli.md and in
// kiln(1), and every kilnd flag is in kilnd(8).
func TestGeneratedDocsCoverTheCLI(t *testing.T) {
	pages := generatedDocs(t)
	var md, man1, man8 string
	for path, text := range pages {
		switch filepath.Base(path) {
		case "cli.md":
			md = text
		case "kiln.1":
			man1 = text
		case "kilnd.8":
			man8 = text
		}
	}
	var c cli
	kctx, _ := parse(&c, []string{"status"}, io.Discard)
	n := 0
	for _, node := range kctx.Model.Leaves(true) {
		words := strings.Fields(cmdWords(node.Path()))
		n++
		heading := "#### `kiln " + strings.Join(words, " ")
		if !strings.Contains(md, heading) {
			t.Errorf("cli.md has no heading %q", heading)
		}
		if !strings.Contains(man1, ".SS kiln "+strings.ReplaceAll(strings.Join(words, " "), "-", `\-`)) {
			t.Errorf("kiln.1 has no .SS for kiln %s", strings.Join(words, " "))
		}
		for n := node; n != nil; n = n.Parent {
			for _, f := range n.Flags {
				if f.Hidden {
					continue
				}
				if !strings.Contains(md, "`--"+f.Name+"`") {
					t.Errorf("cli.md: kiln %s: no flag --%s", strings.Join(words, " "), f.Name)
				}
				if !strings.Contains(man1, `\fB\-\-`+strings.ReplaceAll(f.Name, "-", `\-`)+`\fR`) {
					t.Errorf("kiln.1: kiln %s: no flag --%s", strings.Join(words, " "), f.Name)
				}
			}
		}
		for _, a := range node.Positional {
			if !strings.Contains(md, "<"+a.Name+">") {
				t.Errorf("cli.md: kiln %s: no argument <%s>", strings.Join(words, " "), a.Name)
			}
		}
	}
	if n < 20 {
		t.Fatalf("only %d commands found in kong's model; the check would be vacuous", n)
	}
	for _, f := range []string{"root", "run-dir", "version", "reload"} {
		if !strings.Contains(man8, `\fB\-\-`+strings.ReplaceAll(f, "-", `\-`)+`\fR`) || !strings.Contains(md, "`--"+f+"`") {
			t.Errorf("kilnd --%s is missing from kilnd.8 or cli.md", f)
		}
	}
}

// firstDiff names the first line where got and want differ.
func firstDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	for i := 0; i < len(g) || i < len(w); i++ {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("line %d: committed %q, rendered %q", i+1, gl, wl)
		}
	}
	return "none"
}
