package main

import "context"

func init() { register(Group{Name: "detect", Run: benchDetect}) }

// benchDetect reports BENCH.md's detection figures as not measured: the
// monitor (feedback scoring and the sequential detector) is not built yet,
// and a figure is never made up.
func benchDetect(context.Context, Options) []Figure {
	const why = "the monitor (feedback scoring, the CUSUM detector and automatic rollback) is not built yet"
	return []Figure{
		unmeasured("detect.a_mean_delay", "labels", "<= 175", why),
		unmeasured("detect.a_p99_delay", "labels", "<= 400", why),
		unmeasured("detect.false_rollback_pct", "%", "<= 1.0", why),
		unmeasured("detect.b_mean_delay", "labels", "<= 740", why),
		unmeasured("detect.vs_adwin", "x", "<= 0.85", why),
		unmeasured("detect.unknown_baseline_mean_delay", "labels", "<= 200", why),
	}
}
