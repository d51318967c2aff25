package main

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/alecthomas/kong"
)

// completionCmd prints a shell completion script generated from the same
// kong model that parses the command line, so a new command or flag is
// completed without anyone editing a script. It needs no daemon: the
// packages run it at build time. The scripts complete commands, flags,
// enum values (-o table|json) and file arguments; IDs and pipeline names
// are not completed, since that would need kilnd at every TAB.
type completionCmd struct {
	Shell string `arg:"" enum:"bash,zsh,fish" help:"bash, zsh or fish."`
}

func (completionCmd) Help() string {
	return `Examples:
  kiln completion bash > /etc/bash_completion.d/kiln
  kiln completion zsh > "${fpath[1]}/_kiln"
  kiln completion fish > ~/.config/fish/completions/kiln.fish
  source <(kiln completion bash)     # this shell only

The packages install all three.`
}

func (c completionCmd) Run(e *cmdEnv, k *kong.Context) error {
	nodes := completionNodes(k.Model.Node)
	switch c.Shell {
	case "bash":
		return bashCompletion(e.out, nodes)
	case "zsh":
		return zshCompletion(e.out, nodes)
	default:
		return fishCompletion(e.out, nodes)
	}
}

// compNode is one command as the scripts see it: its path of command words
// ("" for kiln itself), and what may follow it.
type compNode struct {
	path   string
	cmds   []compItem // subcommands
	flags  []compFlag // its own, its ancestors' (kong accepts them anywhere after) and its default subcommand's
	files  bool       // a positional argument names a file
	hidden bool
}

type compItem struct{ name, help string }

type compFlag struct {
	long, short, help string
	valued            bool     // takes a value (the next word, or --long=value)
	enum              []string // its values, when they are a fixed set
	files             bool     // its value is a file
}

// completionNodes flattens the command tree, parents before children.
func completionNodes(root *kong.Node) []compNode {
	var out []compNode
	var walk func(n *kong.Node, path string, inherited []compFlag)
	walk = func(n *kong.Node, path string, inherited []compFlag) {
		flags := append(slices.Clone(inherited), nodeFlags(n)...)
		cn := compNode{path: path, flags: slices.Clone(flags), files: fileArgs(n)}
		for _, ch := range n.Children {
			if ch.Hidden || ch.Type != kong.CommandNode {
				continue
			}
			cn.cmds = append(cn.cmds, compItem{ch.Name, ch.Help})
			if ch == n.DefaultCmd {
				// kiln runs -p P runs the default "list" with its flag.
				cn.flags = append(cn.flags, nodeFlags(ch)...)
				cn.files = cn.files || fileArgs(ch)
			}
		}
		out = append(out, cn)
		for _, ch := range n.Children {
			if ch.Hidden || ch.Type != kong.CommandNode {
				continue
			}
			walk(ch, strings.TrimSpace(path+" "+ch.Name), flags)
		}
	}
	walk(root, "", nil)
	return out
}

func nodeFlags(n *kong.Node) []compFlag {
	var out []compFlag
	for _, f := range n.Flags {
		if f.Hidden {
			continue
		}
		cf := compFlag{long: "--" + f.Name, help: f.Help, valued: !f.IsBool() && !f.IsCounter()}
		if f.Short != 0 {
			cf.short = "-" + string(f.Short)
		}
		if f.Enum != "" {
			for _, v := range strings.Split(f.Enum, ",") {
				cf.enum = append(cf.enum, strings.TrimSpace(v))
			}
		}
		cf.files = isFileType(f.Tag) || f.PlaceHolder == "FILE" || f.PlaceHolder == "PATH"
		out = append(out, cf)
	}
	return out
}

func fileArgs(n *kong.Node) bool {
	for _, p := range n.Positional {
		if isFileType(p.Tag) || p.Name == "file" || p.Name == "files" {
			return true
		}
	}
	return false
}

func isFileType(t *kong.Tag) bool {
	return t != nil && (t.Type == "path" || t.Type == "existingfile" || t.Type == "existingdir")
}

func (n compNode) words() []string {
	var w []string
	for _, c := range n.cmds {
		w = append(w, c.name)
	}
	for _, f := range n.flags {
		w = append(w, f.long)
		if f.short != "" {
			w = append(w, f.short)
		}
	}
	return w
}

func (n compNode) valued() []string {
	var w []string
	for _, f := range n.flags {
		if f.valued {
			w = append(w, f.long)
			if f.short != "" {
				w = append(w, f.short)
			}
		}
	}
	return w
}

// enumCases are "flag) values" lines for the flags of all commands with a
// fixed set of values or a file value; a flag name means the same thing
// wherever it appears.
func enumCases(nodes []compNode) (enums map[string][]string, files []string) {
	enums = map[string][]string{}
	for _, n := range nodes {
		for _, f := range n.flags {
			names := []string{f.long}
			if f.short != "" {
				names = append(names, f.short)
			}
			for _, name := range names {
				switch {
				case len(f.enum) > 0:
					enums[name] = f.enum
				case f.files && !slices.Contains(files, name):
					files = append(files, name)
				}
			}
		}
	}
	return enums, files
}

func sortedKeys(m map[string][]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// bashCompletion writes the bash script. The three scripts read the words
// typed so far the same way: a word that is a subcommand of the path so far
// extends the path, a flag that takes a value skips that value, anything
// else (an argument) is passed over; the data they consult are case tables
// generated below.
func bashCompletion(w io.Writer, nodes []compNode) error {
	var b strings.Builder
	b.WriteString("# bash completion for kiln; generated by `kiln completion bash`.\n\n")
	b.WriteString("_kiln_cmds() {\n    case \"$1\" in\n")
	for _, n := range nodes {
		if len(n.cmds) > 0 {
			var names []string
			for _, c := range n.cmds {
				names = append(names, c.name)
			}
			fmt.Fprintf(&b, "    %q) echo %q ;;\n", n.path, strings.Join(names, " "))
		}
	}
	b.WriteString("    esac\n}\n\n_kiln_words() {\n    case \"$1\" in\n")
	for _, n := range nodes {
		fmt.Fprintf(&b, "    %q) echo %q ;;\n", n.path, strings.Join(n.words(), " "))
	}
	b.WriteString("    esac\n}\n\n_kiln_valued() {\n    case \"$1\" in\n")
	for _, n := range nodes {
		if v := n.valued(); len(v) > 0 {
			fmt.Fprintf(&b, "    %q) echo %q ;;\n", n.path, strings.Join(v, " "))
		}
	}
	b.WriteString("    esac\n}\n\n_kiln_fileargs() {\n    case \"$1\" in\n")
	for _, n := range nodes {
		if n.files {
			fmt.Fprintf(&b, "    %q) return 0 ;;\n", n.path)
		}
	}
	b.WriteString("    esac\n    return 1\n}\n\n")
	enums, files := enumCases(nodes)
	b.WriteString("_kiln_values() {\n    case \"$1\" in\n")
	for _, k := range sortedKeys(enums) {
		fmt.Fprintf(&b, "    %s) echo %q ;;\n", k, strings.Join(enums[k], " "))
	}
	if len(files) > 0 {
		fmt.Fprintf(&b, "    %s) echo __files__ ;;\n", strings.Join(files, "|"))
	}
	b.WriteString("    *) return 1 ;;\n    esac\n}\n\n")
	b.WriteString(`_kiln() {
    local cur=${COMP_WORDS[COMP_CWORD]} path="" i w expect=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]}
        if [[ -n $expect ]]; then expect=""; continue; fi
        case $w in
        --*=*) continue ;;
        -*)
            [[ " $(_kiln_valued "$path") " == *" $w "* ]] && expect=$w
            continue ;;
        esac
        [[ " $(_kiln_cmds "$path") " == *" $w "* ]] && path=${path:+$path }$w
    done
    local vals
    if [[ -n $expect ]] && vals=$(_kiln_values "$expect"); then
        if [[ $vals == __files__ ]]; then
            COMPREPLY=($(compgen -f -- "$cur"))
        else
            COMPREPLY=($(compgen -W "$vals" -- "$cur"))
        fi
        return
    fi
    [[ -n $expect ]] && return
    if [[ $cur == -* ]] || ! _kiln_fileargs "$path"; then
        COMPREPLY=($(compgen -W "$(_kiln_words "$path")" -- "$cur"))
        return
    fi
    COMPREPLY=($(compgen -W "$(_kiln_cmds "$path")" -- "$cur") $(compgen -f -- "$cur"))
}

complete -o filenames -o bashdefault -F _kiln kiln
`)
	_, err := io.WriteString(w, b.String())
	return err
}

func zshCompletion(w io.Writer, nodes []compNode) error {
	var b strings.Builder
	b.WriteString("#compdef kiln\n# zsh completion for kiln; generated by `kiln completion zsh`.\n\n")
	b.WriteString("_kiln_cmds() {\n    case \"$1\" in\n")
	for _, n := range nodes {
		if len(n.cmds) > 0 {
			var items []string
			for _, c := range n.cmds {
				items = append(items, zshQuote(c.name+":"+strings.ReplaceAll(c.help, ":", `\:`)))
			}
			fmt.Fprintf(&b, "    %s) reply=(%s) ;;\n", zshQuote(n.path), strings.Join(items, " "))
		}
	}
	b.WriteString("    *) reply=() ;;\n    esac\n}\n\n_kiln_flags() {\n    case \"$1\" in\n")
	for _, n := range nodes {
		var items []string
		for _, f := range n.flags {
			for _, name := range []string{f.long, f.short} {
				if name != "" {
					items = append(items, zshQuote(name+":"+strings.ReplaceAll(f.help, ":", `\:`)))
				}
			}
		}
		fmt.Fprintf(&b, "    %s) reply=(%s) ;;\n", zshQuote(n.path), strings.Join(items, " "))
	}
	b.WriteString("    esac\n}\n\n_kiln_valued() {\n    case \"$1\" in\n")
	for _, n := range nodes {
		if v := n.valued(); len(v) > 0 {
			fmt.Fprintf(&b, "    %s) reply=(%s) ;;\n", zshQuote(n.path), strings.Join(v, " "))
		}
	}
	b.WriteString("    *) reply=() ;;\n    esac\n}\n\n_kiln_fileargs() {\n    case \"$1\" in\n")
	for _, n := range nodes {
		if n.files {
			fmt.Fprintf(&b, "    %s) return 0 ;;\n", zshQuote(n.path))
		}
	}
	b.WriteString("    esac\n    return 1\n}\n\n")
	enums, files := enumCases(nodes)
	b.WriteString("_kiln_values() {\n    case \"$1\" in\n")
	for _, k := range sortedKeys(enums) {
		fmt.Fprintf(&b, "    %s) reply=(%s) ;;\n", k, strings.Join(enums[k], " "))
	}
	if len(files) > 0 {
		fmt.Fprintf(&b, "    %s) reply=(__files__) ;;\n", strings.Join(files, "|"))
	}
	b.WriteString("    *) return 1 ;;\n    esac\n}\n\n")
	b.WriteString(`_kiln() {
    local path="" i w expect=""
    local -a reply
    for ((i = 2; i < CURRENT; i++)); do
        w=${words[i]}
        if [[ -n $expect ]]; then expect=""; continue; fi
        case $w in
        --*=*) continue ;;
        -*)
            _kiln_valued "$path"
            (( ${reply[(Ie)$w]} )) && expect=$w
            continue ;;
        esac
        _kiln_cmds "$path"
        (( ${reply[(I)${w}:*]} )) && path=${path:+$path }$w
    done
    if [[ -n $expect ]]; then
        if _kiln_values "$expect"; then
            if [[ $reply[1] == __files__ ]]; then _files; else compadd -a reply; fi
        fi
        return
    fi
    if [[ $PREFIX == -* ]]; then
        _kiln_flags "$path"
        _describe -t flags 'flag' reply
        return
    fi
    _kiln_cmds "$path"
    (( $#reply )) && _describe -t commands 'kiln command' reply
    _kiln_fileargs "$path" && _files
    return 0
}

if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
    _kiln "$@"
else
    compdef _kiln kiln
fi
`)
	_, err := io.WriteString(w, b.String())
	return err
}

// zshQuote quotes s for zsh in single quotes.
func zshQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func fishCompletion(w io.Writer, nodes []compNode) error {
	var b strings.Builder
	b.WriteString("# fish completion for kiln; generated by `kiln completion fish`.\n\n")
	b.WriteString("function __kiln_cmds\n    switch $argv[1]\n")
	for _, n := range nodes {
		if len(n.cmds) > 0 {
			var names []string
			for _, c := range n.cmds {
				names = append(names, c.name)
			}
			fmt.Fprintf(&b, "        case %s\n            echo %s\n", zshQuote(n.path), strings.Join(names, " "))
		}
	}
	b.WriteString("    end\nend\n\nfunction __kiln_valued\n    switch $argv[1]\n")
	for _, n := range nodes {
		if v := n.valued(); len(v) > 0 {
			fmt.Fprintf(&b, "        case %s\n            echo %s\n", zshQuote(n.path), strings.Join(v, " "))
		}
	}
	b.WriteString(`    end
end

# __kiln_path prints the command words typed so far ("" for kiln itself).
function __kiln_path
    set -l path ""
    set -l expect 0
    for w in (commandline -opc)[2..-1]
        if test $expect = 1
            set expect 0
            continue
        end
        switch $w
            case '--*=*'
                continue
            case '-*'
                if contains -- $w (string split ' ' -- (__kiln_valued "$path"))
                    set expect 1
                end
                continue
        end
        if contains -- $w (string split ' ' -- (__kiln_cmds "$path"))
            set path (string trim -- "$path $w")
        end
    end
    echo $path
end

complete -c kiln -f
`)
	for _, n := range nodes {
		cond := fmt.Sprintf("-n 'test (__kiln_path) = %s'", fishInner(n.path))
		for _, c := range n.cmds {
			fmt.Fprintf(&b, "complete -c kiln %s -a %s -d %s\n", cond, c.name, zshQuote(c.help))
		}
		for _, f := range n.flags {
			line := fmt.Sprintf("complete -c kiln %s -l %s", cond, strings.TrimPrefix(f.long, "--"))
			if f.short != "" {
				line += " -s " + strings.TrimPrefix(f.short, "-")
			}
			switch {
			case len(f.enum) > 0:
				line += " -x -a " + zshQuote(strings.Join(f.enum, " "))
			case f.files:
				line += " -r -F"
			case f.valued:
				line += " -x"
			}
			fmt.Fprintf(&b, "%s -d %s\n", line, zshQuote(f.help))
		}
		if n.files {
			fmt.Fprintf(&b, "complete -c kiln %s -F\n", cond)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// fishInner quotes a path for the inside of a single-quoted -n condition:
// '"pipelines show"', or '""' for kiln itself.
func fishInner(path string) string { return `"` + path + `"` }
