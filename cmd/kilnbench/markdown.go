package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// markdown is BENCHMARKS.md generated from r: where and when each group
// ran, the table of figures (median, range, goal, pass, the median run's
// detail) in BENCH.md's order with every figure that misses its goal in
// bold, and by how much each misses. The prose here is the part of the
// page that is not a figure; everything else comes from r.
func markdown(r Results) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("# Benchmarks\n\n")
	w("<!-- Generated from bench/results.json by `bin/kilnbench -report bench/results.json -md BENCHMARKS.md`\n")
	w("     (make bench does it after its run). Do not edit: rerun the groups instead. -->\n\n")
	w("The figures of `cmd/kilnbench` against the goals of BENCH.md (`../shared/BENCH.md`, which has the\n")
	w("protocol and defines each figure). Every figure with a baseline is measured side by side with it in\n")
	w("the same run, alternating, and is a ratio; absolute times are informative only.\n\n")
	w("%s A figure's **median** is the median of its\n", repeatLine(r.Groups))
	w("runs (by nearest rank, so it is one run's value), its **range** the lowest and highest run; **pass**\n")
	w("is judged on the median, and only when every run measured the figure and none failed its group's\n")
	w("own checks. The detail is the median run's. Every run's value is in `bench/results.json`.\n\n")
	w("Reproduce: `make bench` (every group 5 times, `REPEAT=N` to change, under a private containerd;\n")
	w("then this file), or one group at a time, which replaces only that group's entry:\n\n")
	w("    .ci/with-containerd bin/kilnbench -bin bin -only GROUP -repeat 5 -json bench/results.json -md BENCHMARKS.md\n\n")

	w("## Where and when\n\n")
	labels, machines := machineLabels(r.Groups)
	for i, m := range machines {
		w("- **%s**: %s\n", string(rune('A'+i)), describeMachine(m))
	}
	w("\n| group | runs | machine | commit | date | wall per run |\n|---|---|---|---|---|---|\n")
	quick := false
	for _, g := range r.Groups {
		runs := fmt.Sprint(g.Repeat)
		if g.Quick {
			runs += " (quick)"
			quick = true
		}
		w("| %s | %s | %s | `%s` | %s | %s |\n", g.Name, runs, labels[g.Name], g.Commit, shortDate(g.Date), wallSummary(g.WallS))
	}
	w("\n")
	if quick {
		w("**Groups marked quick ran with `-quick`: smaller workloads for a smoke run, not figures to quote.**\n\n")
	}
	w("Machines here are shared and noisy: a figure whose range is wide was disturbed by other work in\n")
	w("some runs (the fsync figures measure the disk's tail and move most). The detect and decide groups\n")
	w("use fixed seeds, so their runs give the same figures.")
	if slices.ContainsFunc(r.Groups, func(g GroupResult) bool { return g.Name == "gpu" }) {
		w(" The `gpu` group (not a BENCH.md figure: what kilnd\n")
		w("pays for GPUs at start and stop) needs NVML and a GPU; a run without one keeps the figures of the\n")
		w("last machine that had one (its machine letter above says which); refresh them on such a machine\n")
		w("with `bin/kilnbench -only gpu -repeat 5 -json bench/results.json -md BENCHMARKS.md`.")
	}
	w("\n\n## Figures\n\n| figure | median | range | goal | pass | detail |\n|---|---|---|---|---|---|\n")
	var missed []FigureResult
	for _, g := range r.Groups {
		for _, f := range g.Figures {
			name, pass := "`"+f.Name+"`", "yes"
			if !f.Pass {
				name, pass = "**"+f.Name+"**", "**no**"
				missed = append(missed, f)
			}
			med, rng := "-", "-"
			if f.Value != nil {
				med = fmtValue(*f.Value, f.Unit)
				rng = "one run"
				if len(f.Runs) > 1 {
					rng = fmtRange(*f.Min, *f.Max, f.Unit)
				}
			} else {
				pass = "**not measured**"
			}
			w("| %s | %s | %s | %s | %s | %s |\n", name, med, rng, cell(f.Goal), pass, cell(f.Detail))
		}
	}
	w("\n## Goals missed\n\n")
	if len(missed) == 0 {
		w("None: every figure's median meets its goal.\n")
	}
	for _, f := range missed {
		w("- **%s** (goal %s): %s\n", f.Name, f.Goal, missReason(f))
	}
	return b.String()
}

// repeatLine says how many runs the figures are medians of.
func repeatLine(groups []GroupResult) string {
	ns := map[int]bool{}
	for _, g := range groups {
		ns[g.Repeat] = true
	}
	if len(ns) == 1 {
		for n := range ns {
			if n == 1 {
				return "Each group ran once: the figures are single runs, not medians."
			}
			return fmt.Sprintf("Figures are medians of %d runs, each group's runs back to back, with their range.", n)
		}
	}
	return "Figures are medians of each group's runs (runs, below), back to back, with their range."
}

// missReason says by how much, or why, f does not pass.
func missReason(f FigureResult) string {
	if f.Value == nil {
		return cell(f.Detail)
	}
	s := "median " + fmtValue(*f.Value, f.Unit)
	if len(f.Runs) > 1 {
		s += " (" + fmtRange(*f.Min, *f.Max, f.Unit) + ")"
	}
	if !meets(*f.Value, f.Goal) {
		return s + ", " + shortfall(*f.Value, f.Goal)
	}
	var why []string
	if n := slices.Index(f.Runs, nil); n >= 0 {
		why = append(why, "not every run measured it")
	}
	if len(why) == 0 {
		why = append(why, "a run failed the group's own checks")
	}
	return s + " meets the goal, but " + strings.Join(why, "; ") + " (see the detail)"
}

// machineLabels gives each distinct machine a letter, in group order.
func machineLabels(groups []GroupResult) (map[string]string, []Machine) {
	labels := map[string]string{}
	var keys []string
	var machines []Machine
	for _, g := range groups {
		k, _ := json.Marshal(g.Machine) // a struct of strings and numbers
		i := slices.Index(keys, string(k))
		if i < 0 {
			i = len(keys)
			keys = append(keys, string(k))
			machines = append(machines, g.Machine)
		}
		labels[g.Name] = string(rune('A' + i))
	}
	return labels, machines
}

func describeMachine(m Machine) string {
	var tools []string
	names := make([]string, 0, len(m.Baselines))
	for k := range m.Baselines {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		tools = append(tools, k+" "+m.Baselines[k])
	}
	return fmt.Sprintf("%s, %d cores, %s GiB, %s, kernel %s, cgroup %s; disk: %s; containerd %s, runc %s; %s; GPU: %s; baselines: %s",
		m.CPU, m.Cores, fmtNum(m.MemoryGiB), m.OS, m.Kernel, m.Cgroup, m.Disk, m.Containerd, m.Runc, m.Go, m.GPU, strings.Join(tools, ", "))
}

// wallSummary is a group's median wall time per run and its range:
// "95 s (90-101)", "3.2 min (3.1-3.4)".
func wallSummary(ws []float64) string {
	if len(ws) == 0 {
		return "-"
	}
	div, unit := 1.0, "s"
	if median(ws) >= 120 {
		div, unit = 60, "min"
	}
	s := fmtNum(median(ws)/div) + " " + unit
	if len(ws) > 1 {
		s += fmt.Sprintf(" (%s-%s)", fmtNum(slices.Min(ws)/div), fmtNum(slices.Max(ws)/div))
	}
	return s
}

// cell keeps a table cell on one line and its pipes from splitting it.
func cell(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	return strings.ReplaceAll(s, "|", `\|`)
}
