package ingest

import (
	"math"
	"slices"
	"sort"
)

// Drift is the population stability index (PSI) of each feature of a batch against a
// reference: sum over bins of (a-e)*ln(a/e), a and e the batch's and the reference's share of
// the bin. Numeric features are binned at the reference's quantiles, string features by value.
//
// The number of bins follows the batch size (about 25 values per bin, 2 to 10 bins), because
// PSI between two samples of the same distribution is about (bins-1)/n: ten bins on a batch of
// 20 rows would read as a large shift of pure noise. Features with fewer than minDriftValues
// values on either side are not checked, and the report says so.
const (
	minDriftValues = 50
	maxBins        = 10
	valuesPerBin   = 25
	psiFloor       = 1e-4
	refSampleSize  = 4096
	refCategories  = 256
)

// refColumn is the merged reference of one feature over the datasets of a window: a weighted
// sample of its numeric values (each dataset's sample weighted by the values it stands for),
// or its category counts.
type refColumn struct {
	values   int64
	items    []weighted // numeric, at most refSampleSize, kept by weighted reservoir (A-Res)
	cats     map[string]int64
	highCard bool
}

type weighted struct {
	x, w, key float64
}

// refProfile is the reference of a whole window.
type refProfile struct {
	versions int
	cols     map[string]*refColumn
}

func newRefProfile() *refProfile { return &refProfile{cols: map[string]*refColumn{}} }

// add folds one dataset's profile in. rng is seeded by the dataset's digest, so the merged
// reference is the same whichever order the caller learns of datasets in.
func (r *refProfile) add(prof map[string]ColumnProfile, seed uint64) {
	r.versions++
	rng := seed | 1
	next := func() float64 {
		rng ^= rng << 13
		rng ^= rng >> 7
		rng ^= rng << 17
		return (float64(rng>>11) + 0.5) / (1 << 53)
	}
	for name, p := range prof {
		c := r.cols[name]
		if c == nil {
			c = &refColumn{}
			r.cols[name] = c
		}
		c.values += p.Values
		if len(p.Sample) > 0 {
			w := float64(p.Values) / float64(len(p.Sample))
			for _, x := range p.Sample {
				c.items = append(c.items, weighted{x: x, w: w, key: math.Pow(next(), 1/w)})
			}
			if len(c.items) > refSampleSize {
				slices.SortFunc(c.items, func(a, b weighted) int { return cmpFloat(b.key, a.key) })
				c.items = c.items[:refSampleSize]
			}
		}
		if p.HighCard {
			c.highCard, c.cats = true, nil
		}
		if !c.highCard && len(p.Categories) > 0 {
			if c.cats == nil {
				c.cats = map[string]int64{}
			}
			for k, n := range p.Categories {
				c.cats[k] += n
			}
			if len(c.cats) > refCategories {
				c.highCard, c.cats = true, nil
			}
		}
	}
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// FeatureDrift is the PSI of one feature, or why it was not measured.
type FeatureDrift struct {
	PSI     *float64 `json:"psi,omitempty"`
	Bins    int      `json:"bins,omitempty"`
	Skipped string   `json:"skipped,omitempty"`
}

// drift measures each feature of prof (the label excluded) against r.
func (r *refProfile) drift(prof map[string]ColumnProfile, label string) map[string]FeatureDrift {
	out := map[string]FeatureDrift{}
	for name, p := range prof {
		if name == label {
			continue
		}
		c := r.cols[name]
		switch {
		case c == nil:
			out[name] = FeatureDrift{Skipped: "not in the reference"}
		case p.Values < minDriftValues || c.values < minDriftValues:
			out[name] = FeatureDrift{Skipped: "fewer than 50 values"}
		case len(p.Sample) > 0 && len(c.items) > 0:
			psi, bins := numericPSI(c.items, p.Sample)
			out[name] = FeatureDrift{PSI: &psi, Bins: bins}
		case p.HighCard || c.highCard:
			out[name] = FeatureDrift{Skipped: "more than 64 distinct values"}
		case len(p.Categories) > 0 && len(c.cats) > 0:
			if n := len(unionKeys(p.Categories, c.cats)); int64(n*valuesPerBin) > p.Values {
				out[name] = FeatureDrift{Skipped: "too few values for its categories"}
				continue
			}
			psi, bins := categoricalPSI(c.cats, p.Categories)
			out[name] = FeatureDrift{PSI: &psi, Bins: bins}
		default:
			out[name] = FeatureDrift{Skipped: "no comparable values"}
		}
	}
	return out
}

func unionKeys(a, b map[string]int64) map[string]bool {
	u := map[string]bool{}
	for k := range a {
		u[k] = true
	}
	for k := range b {
		u[k] = true
	}
	return u
}

func numericPSI(ref []weighted, cur []float64) (float64, int) {
	bins := len(cur) / valuesPerBin
	bins = max(2, min(maxBins, bins))
	items := slices.Clone(ref)
	slices.SortFunc(items, func(a, b weighted) int { return cmpFloat(a.x, b.x) })
	var total float64
	for _, it := range items {
		total += it.w
	}
	// Edges at the reference's weighted quantiles; ties collapse bins.
	var edges []float64
	var acc float64
	j := 1
	for _, it := range items {
		acc += it.w
		for j < bins && acc >= total*float64(j)/float64(bins) {
			if len(edges) == 0 || it.x > edges[len(edges)-1] {
				edges = append(edges, it.x)
			}
			j++
		}
	}
	nb := len(edges) + 1
	exp := make([]float64, nb)
	act := make([]float64, nb)
	for _, it := range items {
		exp[sort.SearchFloat64s(edges, it.x)] += it.w / total
	}
	for _, x := range cur {
		act[sort.SearchFloat64s(edges, x)] += 1 / float64(len(cur))
	}
	return psiOf(exp, act), nb
}

func categoricalPSI(ref, cur map[string]int64) (float64, int) {
	keys := unionKeys(ref, cur)
	var rt, ct int64
	for _, n := range ref {
		rt += n
	}
	for _, n := range cur {
		ct += n
	}
	var exp, act []float64
	for k := range keys {
		exp = append(exp, float64(ref[k])/float64(rt))
		act = append(act, float64(cur[k])/float64(ct))
	}
	return psiOf(exp, act), len(keys)
}

func psiOf(exp, act []float64) float64 {
	var psi float64
	for i := range exp {
		e, a := max(exp[i], psiFloor), max(act[i], psiFloor)
		psi += (a - e) * math.Log(a/e)
	}
	return psi
}
