// Command kilnbench measures kiln against the figures of BENCH.md. Every
// figure with a baseline is measured side by side with it in the same run,
// alternating, and reported as a ratio; a group that cannot run here reports
// its figures as not passed with the reason and a null value, never a
// made-up number. It installs nothing: `make deps` installs the baselines.
//
//	kilnbench [-only GROUP[,GROUP]] [-repeat N] [-json FILE] [-md FILE] [-quick] [-bin DIR]
//	kilnbench -report FILE [-md FILE]
//
// Each selected group runs -repeat times in a row before the next group
// starts; every run's value goes to the results file (-json) with the
// median, min and max, the machine and the commit (report.go). An existing
// results file is merged into: only the groups run replace their entries,
// so groups can be rerun one at a time. -md generates BENCHMARKS.md from
// the results (markdown.go); -report does only that.
//
// Each group lives in its own file and registers itself from init.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/kiln-edge/kiln/storage/atomicfile"
)

// groups holds every group, registered by init functions in this package's
// files, one file per group.
var groups []Group

func register(g Group) { groups = append(groups, g) }

// groupOrder is BENCH.md's table order; groups not listed run last.
var groupOrder = []string{"ingest", "storage", "runtime", "serve", "rollback", "monitor", "detect", "decide", "daemon", "e2e", "gpu"}

func main() {
	only := flag.String("only", "", "comma-separated groups to run (default all): "+strings.Join(groupOrder, ",")+"; soak runs only when named")
	repeat := flag.Int("repeat", 1, "run each selected group this many times in a row; figures report the median and range")
	jsonOut := flag.String("json", "", "results file to merge this run's groups into (bench/results.json)")
	mdOut := flag.String("md", "", "generate this markdown file (BENCHMARKS.md) from the results")
	report := flag.String("report", "", "run nothing: generate -md (or print markdown) from this results file")
	quick := flag.Bool("quick", false, "smaller workloads for a smoke run (figures say so in detail)")
	bin := flag.String("bin", "bin", "folder holding the built kilnd and kiln")
	soak := flag.Duration("soak", 10*time.Minute, "how long the soak group runs (-only soak)")
	soakCSV := flag.String("soak-csv", "bench/soak.csv", "where the soak group writes its curves")
	flag.Parse()
	if *report != "" {
		if err := writeReport(*report, *mdOut); err != nil {
			fatal(1, err)
		}
		return
	}
	if *repeat < 1 {
		fatal(2, fmt.Errorf("-repeat %d: want 1 or more", *repeat))
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	selected, err := selectGroups(*only)
	if err != nil {
		fatal(2, err)
	}
	var res Results
	if *jsonOut != "" {
		// Read before running anything: a file that cannot be merged into
		// must not cost a bench run.
		if res, err = readResults(*jsonOut); err != nil {
			fatal(1, err)
		}
	}
	res.Machine, res.Commit, res.Command = thisMachine(ctx), gitDescribe(ctx), commandLine(os.Args)
	res.Date = time.Now().UTC().Format(time.RFC3339)
	res.Groups = slices.DeleteFunc(res.Groups, func(g GroupResult) bool {
		return !slices.ContainsFunc(groups, func(r Group) bool { return r.Name == g.Name })
	})

	opt := Options{Quick: *quick, Bin: *bin, Soak: *soak, SoakCSV: *soakCSV}
	var ran []GroupResult
	for _, g := range selected {
		entry, ok := runGroup(ctx, g, opt, *repeat)
		if !ok {
			fmt.Fprintf(os.Stderr, "kilnbench: interrupted in group %s; its runs are not recorded\n", g.Name)
			break
		}
		entry.Commit, entry.Command, entry.Machine = res.Commit, res.Command, res.Machine
		ran = append(ran, entry)
		if *jsonOut == "" {
			continue
		}
		// Written after every group, so a long run that dies keeps the
		// groups it finished.
		if note := res.put(entry); note != "" {
			fmt.Fprintln(os.Stderr, "kilnbench: "+note)
		}
		if err := writeResults(*jsonOut, res); err != nil {
			fatal(1, err)
		}
	}
	printTable(ran)
	if *mdOut != "" {
		if *jsonOut == "" {
			res.Groups = ran
		}
		if err := atomicfile.Write(*mdOut, []byte(markdown(res)), 0o644); err != nil {
			fatal(1, err)
		}
	}
	if ctx.Err() != nil {
		os.Exit(130)
	}
}

// runGroup runs g n times in a row and folds the runs into one entry;
// false when interrupted.
func runGroup(ctx context.Context, g Group, opt Options, n int) (GroupResult, bool) {
	entry := GroupResult{Name: g.Name, Date: time.Now().UTC().Format(time.RFC3339), Repeat: n, Quick: opt.Quick}
	var runs [][]Figure
	for i := range n {
		fmt.Fprintf(os.Stderr, "kilnbench: group %s run %d of %d\n", g.Name, i+1, n)
		t0 := time.Now()
		got := g.Run(ctx, opt)
		wall := time.Since(t0)
		if ctx.Err() != nil {
			return entry, false
		}
		if opt.Quick {
			for j := range got {
				got[j].Detail += " (quick run)"
			}
		}
		runs = append(runs, got)
		entry.WallS = append(entry.WallS, float64(wall.Milliseconds())/1000)
		fmt.Fprintf(os.Stderr, "kilnbench: group %s run %d took %s\n", g.Name, i+1, wall.Round(100*time.Millisecond))
	}
	entry.Figures = aggregate(runs)
	return entry, true
}

// writeReport generates markdown from a results file, to mdOut or stdout.
func writeReport(resultsPath, mdOut string) error {
	r, err := readResults(resultsPath)
	if err != nil {
		return err
	}
	if len(r.Groups) == 0 {
		return fmt.Errorf("%s: no groups (missing or empty)", resultsPath)
	}
	if mdOut == "" {
		_, err = os.Stdout.WriteString(markdown(r))
		return err
	}
	return atomicfile.Write(mdOut, []byte(markdown(r)), 0o644)
}

// gitDescribe names the commit measured, -dirty when the tree differs.
func gitDescribe(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "git", "describe", "--always", "--dirty").Output()
	if err != nil {
		return "unknown (git describe: " + err.Error() + ")"
	}
	return strings.TrimSpace(string(out))
}

func fatal(code int, err error) {
	fmt.Fprintln(os.Stderr, "kilnbench: "+err.Error())
	os.Exit(code)
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

func printTable(entries []GroupResult) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FIGURE\tMEDIAN\tRANGE\tGOAL\tPASS\tDETAIL")
	for _, g := range entries {
		for _, f := range g.Figures {
			med, rng := "-", "-"
			if f.Value != nil {
				med, rng = fmtValue(*f.Value, f.Unit), fmtRange(*f.Min, *f.Max, f.Unit)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%s\n", f.Name, med, rng, f.Goal, f.Pass, f.Detail)
		}
	}
	_ = tw.Flush()
}
