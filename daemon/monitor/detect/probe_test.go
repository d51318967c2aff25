package detect

import ("testing";"time";"math/rand/v2";"sort")

func run(t *testing.T, p1 float64, unknown bool, label string) {
		var ds []float64
		pre := 0
		t0 := time.Now()
		for seed := 0; seed < 1000; seed++ {
			base := 0.92
			if unknown { base = 0 }
			d, err := New(Config{TargetFalseAlarm: 0.01, Baseline: base})
			if err != nil { t.Fatal(err) }
			r := rand.New(rand.NewPCG(uint64(seed), 99))
			for i := 0; ; i++ {
				p := 0.92
				if i >= 10000 { p = p1 }
				a, _ := d.Observe(r.Float64() < p, "")
				if a != nil {
					if i < 10000 { pre++; d.Rearm(); continue }
					ds = append(ds, float64(i-10000+1)); break
				}
				if i > 10000+20000 { ds = append(ds, 1e9); break }
			}
		}
		sort.Float64s(ds)
		s := 0.0
		for _, x := range ds { s += x }
		t.Logf("%s p1 %v unknown %v mean %.1f p99 %.0f pre %d %v", label, p1, unknown, s/float64(len(ds)), ds[989], pre, time.Since(t0))
}

func TestProbe(t *testing.T) {
	run(t, 0.8, false, "known")
	run(t, 0.8, true, "E400")
	WarmupMisses = 700
	run(t, 0.8, true, "E700")
}
