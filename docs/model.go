package docs

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"strconv"
	"strings"

	"github.com/alecthomas/kong"
)

// AddKong fills p's generated parts from kong's model of a CLI: the
// application's flags are global (every command takes them), and every
// command that is not hidden is listed depth first, in declaration order.
func (p *Page) AddKong(app *kong.Application) {
	p.FlagsTitle = "GLOBAL FLAGS"
	p.Flags = kongFlags(app.Node)
	p.Synopsis = []string{p.Name + " [global flags] <command> [flags] [<args>]"}
	var walk func(n *kong.Node, words []string)
	walk = func(n *kong.Node, words []string) {
		for _, c := range n.Children {
			if c.Hidden {
				continue
			}
			w := append(words[:len(words):len(words)], c.Name)
			if c.Type == kong.ArgumentNode {
				w[len(w)-1] = "<" + c.Name + ">"
			}
			cmd := Command{Help: c.Help, Detail: c.Detail, Flags: kongFlags(c)}
			usage := append([]string{p.Name}, w...)
			for _, a := range c.Positional {
				arg := Arg{Name: a.Name, Help: a.Help, Optional: !a.Required, Repeated: a.IsSlice()}
				cmd.Args = append(cmd.Args, arg)
				usage = append(usage, arg.usage())
			}
			cmd.Usage = strings.Join(usage, " ")
			p.Commands = append(p.Commands, cmd)
			walk(c, w)
		}
	}
	walk(app.Node, nil)
}

func kongFlags(n *kong.Node) []Flag {
	var fs []Flag
	for _, f := range n.Flags {
		if f.Hidden {
			continue
		}
		fl := Flag{Long: f.Name, Short: f.Short, Help: f.Help}
		if !f.IsBool() && !f.IsCounter() {
			switch {
			case f.PlaceHolder != "":
				fl.Value = f.PlaceHolder
			case f.Enum != "":
				fl.Value = strings.Join(f.EnumSlice(), "|")
			default:
				fl.Value = strings.ToUpper(f.Name)
			}
			if f.HasDefault && f.Default != "" {
				fl.Default = f.Default
			}
		}
		fs = append(fs, fl)
	}
	return fs
}

// AddGoFlags fills p's generated parts from the flag.Bool, flag.String,
// flag.Duration and flag.Int calls in a main package's source file, read
// with go/parser: the daemon defines its flags inside main, where no test
// can reach them, and the source is what its -h prints from.
func (p *Page) AddGoFlags(path string) error {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, nil, 0)
	if err != nil {
		return err
	}
	p.FlagsTitle = "OPTIONS"
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok || len(call.Args) != 3 {
			return true
		}
		if pkg, ok := sel.X.(*ast.Ident); !ok || pkg.Name != "flag" {
			return true
		}
		kind := sel.Sel.Name
		switch kind {
		case "Bool", "String", "Duration", "Int", "Int64", "Uint", "Float64":
		default:
			return true
		}
		var lits [3]string
		for i, a := range call.Args {
			switch a := a.(type) {
			case *ast.BasicLit:
				if a.Kind == token.STRING {
					lits[i], err = strconv.Unquote(a.Value)
				} else {
					lits[i] = a.Value
				}
			case *ast.Ident: // true, false
				lits[i] = a.Name
			default:
				err = fmt.Errorf("%s: flag.%s: argument %d is not a literal; the man page cannot be generated from it", fset.Position(a.Pos()), kind, i+1)
			}
		}
		fl := Flag{Long: lits[0], Help: lits[2]}
		if kind != "Bool" {
			fl.Value = strings.ToUpper(lits[0])
			if lits[1] != "" && lits[1] != "0" {
				fl.Default = lits[1]
			}
		}
		p.Flags = append(p.Flags, fl)
		return true
	})
	if err != nil {
		return err
	}
	if len(p.Flags) == 0 {
		return fmt.Errorf("%s: no flag definitions found", path)
	}
	p.Synopsis = []string{p.Name + " [flags]"}
	return nil
}
