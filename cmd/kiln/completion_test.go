package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
)

// completionScript runs `kiln completion SHELL` as main does, with a socket
// nobody listens on: the packages generate the scripts with no kilnd.
func completionScript(t *testing.T, shell string) string {
	t.Helper()
	var c cli
	kctx, code := parse(&c, []string{"--socket", "/nonexistent/kiln.sock", "completion", shell}, os.Stderr)
	if kctx == nil {
		t.Fatalf("kiln completion %s: exit %d", shell, code)
	}
	out, err := os.Create(filepath.Join(t.TempDir(), "kiln."+shell))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = out.Close() }()
	if err := kctx.Run(&cmdEnv{ctx: context.Background(), g: c.globals, out: out}); err != nil {
		t.Fatalf("kiln completion %s: %v", shell, err)
	}
	b, err := os.ReadFile(out.Name())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// topCommands are the top-level command names from the same model.
func topCommands(t *testing.T) []string {
	t.Helper()
	var c cli
	kctx, _ := parse(&c, []string{"status"}, os.Stderr)
	var names []string
	for _, n := range kctx.Model.Children {
		if !n.Hidden {
			names = append(names, n.Name)
		}
	}
	if len(names) < 20 {
		t.Fatalf("only %d top-level commands: %v", len(names), names)
	}
	return names
}

func writeScript(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCompletionBash checks the script with bash -n, then completes real
// command lines with it: commands, nested commands after global flags and
// a flag's value, enum values, and files for a file argument.
func TestCompletionBash(t *testing.T) {
	script := completionScript(t, "bash")
	for _, name := range topCommands(t) {
		if !strings.Contains(script, "\n    \""+name+"\") ") {
			t.Errorf("bash script does not offer %q", name)
		}
	}
	p := writeScript(t, "kiln.bash", script)
	if out, err := exec.Command("bash", "-n", p).CombinedOutput(); err != nil {
		t.Fatalf("bash -n: %v: %s", err, out)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "spec.yaml"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	driver := `source "$1"
t() { COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); COMPREPLY=(); _kiln; echo "${COMPREPLY[*]}"; }
t kiln pip
t kiln -o json pipelines ""
t kiln -o ""
t kiln models -p x acc
t kiln runs --p
t kiln pipelines validate "$2/sp"
`
	out, err := exec.Command("bash", "-c", driver, "driver", p, dir).CombinedOutput()
	if err != nil {
		t.Fatalf("completing with bash: %v: %s", err, out)
	}
	want := []string{
		"pipelines",
		"list show validate reload --help -h --socket --output -o",
		"table json",
		"accuracy",
		"--pipeline",
		dir + "/spec.yaml",
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("bash completions:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestCompletionZshFish: both scripts name every command; where zsh and
// fish are installed (not everywhere CI runs), they also parse and complete.
func TestCompletionZshFish(t *testing.T) {
	zsh, fish := completionScript(t, "zsh"), completionScript(t, "fish")
	if !strings.HasPrefix(zsh, "#compdef kiln\n") {
		t.Errorf("zsh script does not start with #compdef kiln")
	}
	for _, name := range topCommands(t) {
		if !strings.Contains(zsh, "'"+name+":") {
			t.Errorf("zsh script does not offer %q", name)
		}
		if !strings.Contains(fish, "-a "+name+" ") {
			t.Errorf("fish script does not offer %q", name)
		}
	}
	zp, fp := writeScript(t, "_kiln", zsh), writeScript(t, "kiln.fish", fish)
	if _, err := exec.LookPath("zsh"); err == nil {
		// compadd, _describe and _files are stubbed to print what the
		// completion system would have been given.
		driver := `compdef() { :; }
_describe() { print -r -- "${(P)${@[-1]}}" }
compadd() { print -r -- "${(P)2}" }
_files() { print files }
source "$1"
t() { words=("$@"); CURRENT=$#words; PREFIX=$words[-1]; _kiln }
t kiln -o json images ""
t kiln --output ""
t kiln backup ""
`
		out, err := exec.Command("zsh", "-f", "-c", driver, "driver", zp).CombinedOutput()
		want := "import:Import an OCI image archive or a 'docker save' archive (streamed to kilnd). ls:List images (tags and digest pins).\ntable json\nfiles\n"
		if err != nil || string(out) != want {
			t.Errorf("completing with zsh: %v:\n%s\nwant:\n%s", err, out, want)
		}
	} else {
		t.Log("zsh not installed: its script checked for content only")
	}
	if _, err := exec.LookPath("fish"); err == nil {
		out, err := exec.Command("fish", "-c", `source $argv[1]; complete -C "kiln -o json gpu "; complete -C "kiln -o "`, fp).CombinedOutput()
		want := "cordon\tKeep a GPU from placement (index or UUID).\nlist\tShow GPUs, health, leases and cordons (the default).\nuncordon\tLet a cordoned GPU be placed again.\njson\tOutput format: table or json.\ntable\tOutput format: table or json.\n"
		if err != nil || string(out) != want {
			t.Errorf("completing with fish: %v:\n%s\nwant:\n%s", err, out, want)
		}
	} else {
		t.Log("fish not installed: its script checked for content only")
	}
}

// TestEveryCommandHasExamples: `kiln CMD --help` of every command shows
// examples that run that very command.
func TestEveryCommandHasExamples(t *testing.T) {
	var c cli
	kctx, _ := parse(&c, []string{"status"}, os.Stderr)
	var walk func(n *kong.Node, path string)
	walk = func(n *kong.Node, path string) {
		for _, ch := range n.Children {
			if ch.Type != kong.CommandNode || ch.Hidden {
				continue
			}
			p := strings.TrimSpace(path + " " + ch.Name)
			_, examples, ok := strings.Cut(ch.Detail, "Examples:\n")
			// A default subcommand may be shown without its name (kiln
			// pipelines for kiln pipelines list).
			short := strings.TrimSpace(strings.TrimSuffix(" "+p, " "+ch.Name))
			if !ok || !(strings.Contains(examples, "  kiln "+p) || ch == n.DefaultCmd && strings.Contains(examples, "  kiln "+short)) {
				t.Errorf("kiln %s --help: no examples of it:\n%s", p, ch.Detail)
			}
			walk(ch, p)
		}
	}
	walk(kctx.Model.Node, "")
}
