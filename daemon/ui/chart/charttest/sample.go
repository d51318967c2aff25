// Package charttest holds the accuracy series the chart's and the CLI's
// tests share.
package charttest

import (
	"time"

	"github.com/kiln-edge/kiln/daemon/api"
)

// Sample is a pipeline's series with a promotion and a rollback: m1 live
// twice, then standby twice after m2's promotion at hour 3, and a rollback
// to m1 at hour 7. The chart's and the CLI's tests draw and print it.
func Sample() api.Accuracy {
	t0 := time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC)
	at := func(h int) time.Time { return t0.Add(time.Duration(h) * time.Hour) }
	f := func(v float64) *float64 { return &v }
	return api.Accuracy{Pipeline: "iris", Metric: "accuracy", Live: "iris/m1", Standby: "iris/m2",
		Models: []api.ModelSeries{
			// Live twice, standby twice (m2 promoted at hour 3).
			{Model: "iris/m1", Points: []api.SeriesPoint{
				{Time: at(1), Feedback: "iris/d1", Role: "live", Rows: 10, Value: f(0.8), Labels: 10, Cumulative: f(0.8)},
				{Time: at(2), Feedback: "iris/d2", Role: "live", Rows: 10, Value: f(0.9), Labels: 20, Cumulative: f(0.85)},
				{Time: at(4), Feedback: "iris/d3", Role: "standby", Rows: 10, Value: f(0.7), Labels: 30, Cumulative: f(0.8)},
				{Time: at(5), Feedback: "iris/d4", Role: "standby", Rows: 10, Value: f(0.6), Labels: 40, Cumulative: f(0.75)},
			}},
			{Model: "iris/m2", Points: []api.SeriesPoint{
				{Time: at(4), Feedback: "iris/d3", Role: "live", Rows: 10, Value: f(0.5), Labels: 10, Cumulative: f(0.5)},
				{Time: at(5), Feedback: "iris/d4", Role: "live", Rows: 10, Value: f(0.4), Labels: 20, Cumulative: f(0.45)},
				{Time: at(6), Feedback: "iris/d5", Role: "live", Rows: 10, Value: f(0.3), Labels: 30, Cumulative: f(0.4)},
			}},
		},
		Deployments: []api.DeploymentMark{
			{ID: "iris/e1", Model: "iris/m1", State: "ended", Created: at(0)},
			{ID: "iris/e2", Model: "iris/m2", State: "standby", Created: at(3)},
			{ID: "iris/e3", Model: "iris/m1", State: "live", Created: at(7), Rollback: true},
		},
	}
}
