// Package detect owns the statistics of kiln's automatic rollback: the
// sequential detector that watches a live model's labelled outcomes, the
// paired test of live against standby that runs from promotion, and the
// decision taken after an alarm. It is pure (standard library only, no
// I/O); the monitor (package monitor) feeds it labels, persists its state
// (JSON) and acts on its verdicts.
//
// # Streams
//
// A stream is a sequence of labels, each a hit or a miss. The overall
// stream is the live model's correctness (miss = wrong answer); for
// mae/rmse pipelines the caller passes "|error| within the holdout's 90th
// percentile |error|" as correct, so a rise in the rate of large errors is
// a rise in the miss rate. For macro_f1 pipelines each class also has a
// recall stream (the labels of that true class; miss = the model said
// something else), so the collapse of a rare class is seen even when
// overall accuracy barely moves.
//
// # The detector: three integer Bernoulli CUSUMs per stream
//
// The post-drop rate is unknown, so each stream runs three CUSUMs tuned to
// rises of the miss rate's odds by Ratios = 1.5, 2.25 and 3.375 (a
// geometric grid: any rise from 1.5x to 4x is within 1.23x of a tuned one;
// a CUSUM's delay grows slowly away from its tuning). Each CUSUM is the
// log-likelihood ratio of "miss rate q1" against the reference q0, scaled
// to integers (about 1,500 units per threshold, so rounding changes a
// step by under a third of a percent of the threshold): S = max(0, S+Up)
// on a miss, max(0, S-Down) on a hit, alarm at S >= H. Because the
// statistic that runs is integer-valued, the Markov chain the calibration
// computes is exactly the detector, not an approximation of it.
//
// # Thresholds, derived
//
// monitor.target_false_alarm (alpha, default 0.01) is the probability of any
// alarm, from any stream or the paired test, within Horizon = 100,000
// labels of a stable live model. It is split by union bounds, so each
// share is an upper bound and the total holds whatever the streams'
// dependence:
//
//	detector streams  DetectorShare = 0.9 alpha   (paired test: 0.1 alpha)
//	  overall stream  all of it, or half when there are class streams
//	  class streams   the other half, evenly
//	  per CUSUM       a third of its stream's share
//
// (Simulations showed the three CUSUMs' false alarms nearly disjoint, so
// the union bound over them wastes little; see BENCH.md's
// detect.false_rollback_pct: 0.9% is spent, about that much is measured.)
// A class stream sees fewer than Horizon labels; it is calibrated for the
// full Horizon all the same, which only errs safe.
//
// For one CUSUM with threshold H, the probability of an alarm within n
// labels at miss rate q is computed from the chain. The chain embedded at
// misses (only a miss can alarm; the run of hits between misses is
// geometric, so it moves the statistic down in one O(H) pass) gives by
// power iteration the quasi-stationary alarm hazard per label. Started at
// 0, the CUSUM is label by label at or below a copy started from the
// quasi-stationary law (its update is monotone in the state), so
// 1-(1-hazard)^n bounds the horizon false-alarm probability from above; it
// is within a few percent of the exact label-by-label chain (test
// TestHorizonBoundAgainstExactChain), and H is the smallest integer that
// keeps it under the CUSUM's share. A calibration takes tens of
// milliseconds (up to a few hundred for miss rates near 0.005); results
// are cached by (reference on a grid of 0.02 in log-odds, rounded up;
// ratio; level; horizon). Miss rates under 0.001 are monitored as 0.001
// and over 0.9 make the stream blind: both only err safe.
//
// # Unknown baseline: the warm-up
//
// The promotion-time holdout is too small to be the baseline (with ~100
// rows, a third of stable streams would alarm), so a stream estimates its
// miss rate from its first live labels: until WarmupMisses = 400 misses or
// WarmupMaxLabels = 20,000 labels (class streams: 100 misses or 2,000
// labels). Stopping at a number of misses gives every accuracy the same
// relative precision, about 1/sqrt(400) = 5% of the miss rate (5,000
// labels at 92% accuracy); more misses buy little (700 misses shortened
// the benchmark's delay by 4 labels and lengthen the blind warm-up by
// 75%). Class streams only need to see collapses, so a coarser estimate
// and a shorter wait serve them better.
//
// The estimate's error is part of the false-alarm budget: the whole
// procedure (estimate, then monitor) must alarm within the horizon with
// probability at most the stream's share. For the estimate q^ with
// relative standard error s (Jeffreys' estimate (e+1/2)/(n+1), s =
// sqrt((1-q^)/(q^ n))), the true rate is q^ exp(s Z), Z standard normal.
// Near the calibration, log P(alarm) is close to linear in Z with slope
// beta, which the chain gives (the change over one standard error above;
// for a convex curve this secant is steeper than the tangent, the safe
// side). Calibrating the CUSUM at q^ exp(k s) then averages to
// level*exp(beta^2/2 - beta k), so k = beta/2 (measured twice, at k=1 and
// at the result) keeps the procedure at its level. Reference and spread
// are put on grids, rounded up, so calibrations are cached. This is a
// delta-method argument, not a bound; the benchmark's
// detect.unknown_baseline_false_alarm_pct measures the whole procedure on
// 10,000 stable streams.
//
// # Hysteresis and state
//
// An alarm latches the detector: no stream alarms again (warm-ups go on)
// until the caller calls Rearm (statistics to 0, baselines kept: after an
// alarm the decision found no reason to act on) or Rebaseline (every stream
// warms up again: after concept drift, when the model keeps serving in a
// changed world). After a rollback the live model is another model and
// gets a new Detector. MarshalJSON holds configuration, calibration and
// statistics, so Restore resumes exactly, without recalibrating.
//
// # The paired test, from promotion
//
// A model bad from the moment it was promoted looks normal to a baseline
// learned after promotion, so beside the detector runs a test on the rows
// both models answered where exactly one was right (H0: each wins half).
// Its statistic is the mixture likelihood ratio over standby win rates
// 0.55..0.9, a nonnegative martingale under H0; Ville's inequality makes
// "reject once it reaches 1/level" valid at any stopping time, however
// long it runs. Its level is the remaining 0.1 alpha.
//
// # The decision after an alarm
//
// The rows that raised an alarm are biased, so the decision uses only rows
// that arrive after it. On their discordant rows it runs a sequential sign
// test: after each discordant row from the 20th on, the log-likelihood
// ratio of "the standby wins 2/3 of them" against "half" is compared with
// two boundaries. Crossing the upper one is Rollback; the lower one
// (Wald's ln 0.05: a standby that wins 2/3 ends in Drift about 5% of the
// time) or 512 discordant rows (where both hypotheses have decided with
// probability 0.999) is Drift; between them, Inconclusive. Wald's upper
// boundary is only approximate, so the upper boundary is instead solved
// from the exact distribution of the binomial walk (dynamic programming
// over both boundaries and the truncation): a standby no better than the
// live model is rolled back to with probability at most DecisionShare *
// alpha = 0.005, exactly. That level is a false rollback per decision:
// a rolled-back model is never promoted again automatically, so the
// decision is held to half the detector's per-horizon budget. The Decision
// reports the counts, the window (rows after the alarm), both accuracies on
// it and the exact one-sided sign-test p-value P(Binomial(n, 1/2) >= W)
// at the stopping row.
//
// # Seeds
//
// Calibration uses no random numbers (exact chains and dynamic
// programmes). The package tests draw from math/rand's PCG under seeds
// 0x7e57xxxx; cmd/kilnbench draws from splitmix64 under 0xbe7cxxxx
// families: no stream is shared between calibration, tests and benchmark.
package detect
