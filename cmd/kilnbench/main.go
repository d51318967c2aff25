// Command kilnbench measures kiln against the figures of BENCH.md. Every
// figure with a baseline is measured side by side with it in the same run,
// alternating, and reported as a ratio; a group that cannot run here reports
// its figures as not passed with the reason, never a made-up number. It
// installs nothing: `make deps` installs the baselines.
//
//	kilnbench [-only GROUP[,GROUP]] [-json FILE] [-quick] [-bin DIR]
//
// Each group lives in its own file and registers itself from init.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// groups holds every group, registered by init functions in this package's
// files, one file per group.
var groups []Group

func register(g Group) { groups = append(groups, g) }

// groupOrder is BENCH.md's table order; groups not listed run last.
var groupOrder = []string{"ingest", "storage", "runtime", "serve", "rollback", "monitor", "detect", "decide", "daemon", "e2e", "gpu"}

func main() {
	only := flag.String("only", "", "comma-separated groups to run (default all): "+strings.Join(groupOrder, ",")+"; soak runs only when named")
	jsonOut := flag.String("json", "", "write the figures as a JSON array to this file")
	quick := flag.Bool("quick", false, "smaller workloads for a smoke run (figures say so in detail)")
	bin := flag.String("bin", "bin", "folder holding the built kilnd and kiln")
	soak := flag.Duration("soak", 10*time.Minute, "how long the soak group runs (-only soak)")
	soakCSV := flag.String("soak-csv", "bench/soak.csv", "where the soak group writes its curves")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	selected, err := selectGroups(*only)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kilnbench: "+err.Error())
		os.Exit(2)
	}
	opt := Options{Quick: *quick, Bin: *bin, Soak: *soak, SoakCSV: *soakCSV}
	var figs []Figure
	for _, g := range selected {
		fmt.Fprintf(os.Stderr, "kilnbench: running group %s\n", g.Name)
		got := g.Run(ctx, opt)
		if opt.Quick {
			for i := range got {
				got[i].Detail += " (quick run)"
			}
		}
		figs = append(figs, got...)
	}
	printTable(figs)
	if *jsonOut != "" {
		b, err := json.MarshalIndent(figs, "", "  ")
		if err == nil {
			err = os.WriteFile(*jsonOut, append(b, '\n'), 0o644)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "kilnbench: write "+*jsonOut+": "+err.Error())
			os.Exit(1)
		}
	}
}

func selectGroups(only string) ([]Group, error) {
	rank := func(name string) int {
		if i := slices.Index(groupOrder, name); i >= 0 {
			return i
		}
		return len(groupOrder)
	}
	all := slices.Clone(groups)
	slices.SortStableFunc(all, func(a, b Group) int { return rank(a.Name) - rank(b.Name) })
	if only == "" {
		return slices.DeleteFunc(all, func(g Group) bool { return g.OptIn }), nil
	}
	var out []Group
	for _, name := range strings.Split(only, ",") {
		i := slices.IndexFunc(all, func(g Group) bool { return g.Name == name })
		if i < 0 {
			var have []string
			for _, g := range all {
				have = append(have, g.Name)
			}
			return nil, fmt.Errorf("no group %q (have: %s)", name, strings.Join(have, ", "))
		}
		out = append(out, all[i])
	}
	return out, nil
}

func printTable(figs []Figure) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FIGURE\tVALUE\tGOAL\tPASS\tDETAIL")
	for _, f := range figs {
		val := "-"
		if !strings.HasPrefix(f.Detail, "not measured") {
			val = fmt.Sprintf("%.3g %s", f.Value, f.Unit)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\n", f.Name, val, f.Goal, f.Pass, f.Detail)
	}
	_ = tw.Flush()
}
