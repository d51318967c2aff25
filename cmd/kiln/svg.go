package main

import (
	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/daemon/ui/chart"
)

// accuracySVG is the accuracy chart as a file: the drawing lives in
// daemon/ui/chart, which kilnd's dashboard inlines in its pages too.
func accuracySVG(a api.Accuracy) []byte { return chart.Accuracy(a, chart.Options{XMLHeader: true}) }
