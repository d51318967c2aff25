package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Figure is one group run's result for one figure of BENCH.md. Value is nil
// (JSON null) when the figure could not be measured: the group reports
// Pass=false with the reason in Detail, never a made-up number or a zero.
// Build figures with measured and unmeasured.
type Figure struct {
	Name   string   `json:"name"`
	Value  *float64 `json:"value"`
	Unit   string   `json:"unit"`
	Goal   string   `json:"goal"`
	Pass   bool     `json:"pass"`
	Detail string   `json:"detail"`
}

// Options are the harness flags every group sees.
type Options struct {
	// Quick shrinks workloads for a smoke run; figures from a quick run are
	// marked as such in Detail and are not the ones to report.
	Quick bool
	// Bin is the folder holding built kilnd/kiln binaries.
	Bin string
	// Soak is how long the soak group runs; SoakCSV is where its curves go.
	Soak    time.Duration
	SoakCSV string
}

// Group produces the figures of one BENCH.md group.
type Group struct {
	Name string
	Run  func(ctx context.Context, opt Options) []Figure
	// OptIn groups run only when -only names them (the soak takes minutes).
	OptIn bool
}

// measured builds a figure and judges it against goal (">= 4", "<= 0.5", "== 0").
func measured(name string, value float64, unit, goal, detail string) Figure {
	f := Figure{Name: name, Value: &value, Unit: unit, Goal: goal, Detail: detail}
	f.Pass = meets(value, goal)
	return f
}

// unmeasured reports a figure that could not be taken here, never a made-up number.
func unmeasured(name, unit, goal, why string) Figure {
	return Figure{Name: name, Unit: unit, Goal: goal, Pass: false, Detail: "not measured: " + why}
}

func meets(v float64, goal string) bool {
	op, num, ok := strings.Cut(strings.TrimSpace(goal), " ")
	if !ok {
		return false
	}
	want, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil {
		return false
	}
	switch op {
	case ">=":
		return v >= want
	case "<=":
		return v <= want
	case "==":
		return v == want
	case ">":
		return v > want
	case "<":
		return v < want
	}
	panic(fmt.Sprintf("kilnbench: bad goal %q", goal))
}
