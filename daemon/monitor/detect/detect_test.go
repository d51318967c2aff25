package detect

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"
)

// Test streams draw from math/rand's PCG under seeds 0x7e57xxxx; the
// benchmark uses splitmix64 under 0xbe7cxxxx families, and the calibration
// uses no seeds (an exact chain), so the three never share draws.
func testRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(0x7e570000+seed, 0x7e57)) }

func TestSignTestPExact(t *testing.T) {
	// By hand: P(Bin(20,1/2) >= 15) = (C(20,15)+...+C(20,20))/2^20
	// = (15504+4845+1140+190+20+1)/1048576 = 21700/1048576.
	cases := []struct {
		w, n int
		want float64
	}{
		{15, 20, 21700.0 / 1048576},
		{17, 20, 1351.0 / 1048576},
		{10, 20, 616666.0 / 1048576}, // 1/2 + C(20,10)/2^21
		{20, 20, 1.0 / 1048576},
		{0, 20, 1},
		{3, 3, 1.0 / 8},
		{2, 3, 4.0 / 8},
	}
	for _, c := range cases {
		if got := SignTestP(c.w, c.n); math.Abs(got-c.want) > 1e-12*math.Max(c.want, 1e-300) {
			t.Errorf("SignTestP(%d, %d) = %.15g, want %.15g", c.w, c.n, got, c.want)
		}
	}
}

func TestBinomCDFAgainstDirectSum(t *testing.T) {
	for _, c := range []struct {
		n, k int
		p    float64
	}{{50, 3, 0.08}, {50, 10, 0.08}, {1000, 60, 0.08}, {1000, 95, 0.08}, {20000, 1500, 0.08}} {
		want := 0.0
		for j := 0; j <= c.k; j++ {
			want += binomPMF(c.n, j, c.p)
		}
		if got := binomCDF(c.n, c.k, c.p); math.Abs(got-want) > 1e-10 {
			t.Errorf("binomCDF(%d, %d, %v) = %v, want %v", c.n, c.k, c.p, got, want)
		}
	}
}

// The hazard bound the calibration uses must bound the exact chain from
// above and stay close to it.
func TestHorizonBoundAgainstExactChain(t *testing.T) {
	for _, q := range []float64{0.08, 0.3} {
		p, err := calibrate(refMissRate(q), 2.25, 0.003, DefaultHorizon)
		if err != nil {
			t.Fatal(err)
		}
		exact := falseAlarmProb(int(p.Up), int(p.Down), int(p.H), p.Ref, DefaultHorizon)
		bound := horizonFalseAlarm(int(p.Up), int(p.Down), int(p.H), p.Ref, DefaultHorizon)
		if bound < exact || bound > 1.05*exact || bound > 0.003 {
			t.Errorf("q %v: bound %v, exact %v (want exact <= bound <= min(1.05 exact, 0.003))", q, bound, exact)
		}
		// one unit lower must fail the level: the threshold is the smallest
		if lower := horizonFalseAlarm(int(p.Up), int(p.Down), int(p.H)-1, p.Ref, DefaultHorizon); lower <= 0.003 {
			t.Errorf("q %v: threshold %d is not the smallest (h-1 gives %v)", q, p.H, lower)
		}
	}
}

// The chain's per-label hazard agrees with a plain simulation of the
// integer CUSUM at a level where alarms are common enough to count.
func TestHazardMatchesSimulation(t *testing.T) {
	up, down, h, q := 28, 3, 300, 0.08
	want := hazard(up, down, h, q)
	r := testRand(1)
	s, alarms, n := 0, 0, 4_000_000
	for range n {
		if r.Float64() < q {
			s += up
			if s >= h {
				alarms++
				s = 0
			}
		} else {
			s = max(0, s-down)
		}
	}
	got := float64(alarms) / float64(n)
	// Poisson count: 4 standard errors.
	if se := math.Sqrt(want * float64(n)); math.Abs(got-want)*float64(n) > 4*se+1 {
		t.Errorf("simulated hazard %v (%d alarms), chain %v", got, alarms, want)
	}
}

func TestCalibrationFromScratch(t *testing.T) {
	// off the caches: one stream, three CUSUMs, known and estimated
	calMu.Lock()
	calCache = map[calKey]cusumParams{}
	inflateCache = map[inflateKey]cusumParams{}
	calMu.Unlock()
	for _, base := range []float64{0.92, 0} {
		d, err := New(Config{TargetFalseAlarm: 0.01, Baseline: base})
		if err != nil {
			t.Fatal(err)
		}
		if base == 0 {
			for i := 0; d.Status()[0].Phase == PhaseWarmup; i++ {
				if _, err := d.Observe(i%12 != 0, ""); err != nil {
					t.Fatal(err)
				}
			}
		}
		if st := d.Status()[0]; st.Phase != PhaseArmed || st.Baseline <= 0.5 || st.Baseline > 0.92 {
			t.Errorf("baseline %v: status %+v", base, st)
		}
	}
}

func TestAlarmsOnDropQuietWhenStable(t *testing.T) {
	for _, known := range []float64{0.92, 0} {
		// a clear drop: 0.92 -> 0.75 after 8,000 labels
		for seed := range uint64(20) {
			d, err := New(Config{TargetFalseAlarm: 0.01, Baseline: known})
			if err != nil {
				t.Fatal(err)
			}
			r := testRand(100 + seed)
			at := -1
			for i := 0; i < 12_000 && at < 0; i++ {
				p := 0.92
				if i >= 8000 {
					p = 0.75
				}
				a, err := d.Observe(r.Float64() < p, "")
				if err != nil {
					t.Fatal(err)
				}
				if a != nil {
					at = i
					if a.Stream != "overall" || a.Statistic < a.Threshold || a.Baseline < 0.9 || a.TunedTo >= a.Baseline {
						t.Errorf("alarm %+v", a)
					}
				}
			}
			if at < 8000 || at > 8000+1000 {
				t.Errorf("baseline %v seed %d: alarm at label %d, want within 1000 labels after 8000", known, seed, at)
			}
		}
		// Stable: 20 streams of 100k labels. Each alarms with probability
		// under 1%, so 3 or more of 20 happens by chance with probability
		// under 0.1%; the benchmark measures the rate itself.
		alarms := 0
		for seed := range uint64(20) {
			d, _ := New(Config{TargetFalseAlarm: 0.01, Baseline: known})
			r := testRand(200 + seed)
			for range DefaultHorizon + 6000 {
				if a, _ := d.Observe(r.Float64() < 0.92, ""); a != nil {
					alarms++
					break
				}
			}
		}
		if alarms > 2 {
			t.Errorf("baseline %v: %d of 20 stable streams alarmed", known, alarms)
		}
	}
}

func TestLatchedUntilRearm(t *testing.T) {
	d, _ := New(Config{TargetFalseAlarm: 0.01, Baseline: 0.9})
	n := 0
	for {
		n++
		if a, _ := d.Observe(false, ""); a != nil {
			break
		}
	}
	for range 1000 {
		if a, _ := d.Observe(false, ""); a != nil {
			t.Fatal("alarmed again while latched")
		}
	}
	if d.Alarmed() == nil {
		t.Fatal("Alarmed() nil after an alarm")
	}
	d.Rearm()
	if d.Alarmed() != nil {
		t.Fatal("still latched after Rearm")
	}
	m := 0
	for {
		m++
		if a, _ := d.Observe(false, ""); a != nil {
			break
		}
	}
	if m != n {
		t.Errorf("after Rearm the statistic restarted at %d misses to alarm, want %d (from 0)", m, n)
	}
	d.Rebaseline()
	if st := d.Status()[0]; st.Phase != PhaseWarmup || st.WarmupLabels != 0 {
		t.Errorf("after Rebaseline: %+v", st)
	}
}

// A restored detector resumes exactly: the same labels give the same alarm
// at the same label, in warm-up and armed alike, with class streams.
func TestStateRoundTrip(t *testing.T) {
	classes := []string{"a", "b", "rare"}
	for _, cut := range []int{100, 3000, 9000} {
		a, _ := New(Config{TargetFalseAlarm: 0.01, Classes: classes})
		r := testRand(300)
		type lab struct {
			ok    bool
			class string
		}
		var labels []lab
		for i := range 30_000 {
			c := classes[min(2, i%7/3)]
			p := 0.93
			if c == "rare" && i > 20_000 {
				p = 0.3 // the rare class collapses
			}
			labels = append(labels, lab{r.Float64() < p, c})
		}
		alarmAt := func(d *Detector, from int) (int, *Alarm) {
			for i := from; i < len(labels); i++ {
				al, err := d.Observe(labels[i].ok, labels[i].class)
				if err != nil {
					t.Fatal(err)
				}
				if al != nil {
					return i, al
				}
			}
			return -1, nil
		}
		for i := range cut {
			if al, _ := a.Observe(labels[i].ok, labels[i].class); al != nil {
				t.Fatalf("alarm before the cut at %d", i)
			}
		}
		b, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		restored, err := Restore(b)
		if err != nil {
			t.Fatal(err)
		}
		b2, _ := json.Marshal(restored)
		if string(b) != string(b2) {
			t.Fatalf("state changed through a round trip:\n%s\n%s", b, b2)
		}
		i1, a1 := alarmAt(a, cut)
		i2, a2 := alarmAt(restored, cut)
		if i1 != i2 || i1 < 0 || *a1 != *a2 {
			t.Errorf("cut %d: original alarm at %d %+v, restored at %d %+v", cut, i1, a1, i2, a2)
		}
		if i1 >= 0 && a1.Stream != "class:rare" {
			t.Errorf("cut %d: the rare class's collapse was raised by %s", cut, a1.Stream)
		}
	}
	if _, err := Restore([]byte(`{"version":1,"config":{"target_false_alarm":0.01},"streams":[{"name":"overall","phase":"armed","cusums":[{"up":0}]}]}`)); err == nil {
		t.Error("Restore accepted a stream with a zero step")
	}
}

func TestPairedTest(t *testing.T) {
	pt, err := NewPairedTest(0.01)
	if err != nil {
		t.Fatal(err)
	}
	if pt.Level != 0.001 {
		t.Fatalf("level %v, want 0.1 of the target", pt.Level)
	}
	// concordant rows carry nothing
	for range 100 {
		pt.Observe(true, true)
		pt.Observe(false, false)
	}
	if pt.StandbyWins+pt.LiveWins != 0 {
		t.Fatal("concordant rows counted")
	}
	// By hand: after W standby wins and no live wins, E = mean over theta
	// of (2 theta)^W = mean(1.1^W, 1.2^W, ..., 1.8^W); it passes 1/0.001
	// first at W=15: W=14 gives (3.80+12.84+39.37+111.12+291.93+720.58+
	// 1683.80+3748.21)/8 = 826.5, W=15 gives (4.18+15.41+51.19+155.57+
	// 437.89+1152.92+2862.42+6746.78)/8 = 1428.3.
	rejectAt := 0
	for w := 1; w <= 20; w++ {
		if pt.Observe(false, true) {
			rejectAt = w
			break
		}
	}
	if rejectAt != 15 {
		t.Errorf("rejected at %d standby wins, want 15 (log E %v)", rejectAt, pt.LogE())
	}
	b, _ := json.Marshal(pt)
	back, err := RestorePairedTest(b)
	if err != nil || *back != *pt {
		t.Errorf("round trip: %+v, %v", back, err)
	}
	// Under H0 (each wins half) the e-process rarely rejects: Ville bounds
	// it by the level, 0.1%; 200 streams of 5,000 discordant rows.
	rejects := 0
	for seed := range uint64(200) {
		p, _ := NewPairedTest(0.01)
		r := testRand(400 + seed)
		for range 5000 {
			w := r.IntN(2) == 0
			if p.Observe(w, !w) {
				rejects++
				break
			}
		}
	}
	if rejects > 2 {
		t.Errorf("%d of 200 null streams rejected at level 0.001", rejects)
	}
}

func TestPlanExact(t *testing.T) {
	p, err := NewPlan(0.01)
	if err != nil {
		t.Fatal(err)
	}
	if p.TypeI > p.Level || p.Level != 0.005 || p.Power < 0.95 {
		t.Fatalf("plan %+v: want exact type I <= level 0.005 and power >= 0.95 at 2/3", p)
	}
	// Brute force the type I error over every path of a short plan (same
	// boundaries, truncated at 21 rows), asking Decide at each row as the
	// Decider does, against the dynamic programme.
	short := p
	short.MaxDiscordant = 21
	want, _ := short.walk(0.5)
	var got float64
	var dfs func(l, w int64, prob float64)
	dfs = func(l, w int64, prob float64) {
		if l+w > 0 {
			switch v, _ := short.Decide(l, w); v {
			case Rollback:
				got += prob
				return
			case Drift:
				return
			}
		}
		dfs(l+1, w, prob/2)
		dfs(l, w+1, prob/2)
	}
	dfs(0, 0, 1)
	if math.Abs(got-want) > 1e-12 {
		t.Errorf("dynamic programme %v, enumeration %v", want, got)
	}
}

func TestDecide(t *testing.T) {
	p, _ := NewPlan(0.01)
	cases := []struct {
		live, standby int64
		want          Verdict
	}{
		{0, 19, Inconclusive}, // fewer than 20 discordant rows
		{0, 20, Rollback},     // LLR 20 ln(4/3) = 5.75 >= upper
		{5, 15, Inconclusive},
		{10, 10, Inconclusive}, // LLR 10 ln(4/3)+10 ln(2/3) = -1.18
		{15, 5, Drift},         // 5 ln(4/3) + 15 ln(2/3) = -4.64 <= ln 0.05
	}
	for _, c := range cases {
		v, pv := p.Decide(c.live, c.standby)
		if v != c.want {
			t.Errorf("Decide(%d, %d) = %s (p %v), want %s", c.live, c.standby, v, pv, c.want)
		}
	}
	// p-value reported is the exact sign test: 20 of 20 -> 2^-20
	if _, pv := p.Decide(0, 20); math.Abs(pv-1.0/1048576) > 1e-18 {
		t.Errorf("p-value %v, want 2^-20", pv)
	}

	// The Decider on a constructed sequence: 30 rows both right, then the
	// standby alone right 20 times.
	d, _ := NewDecider(0.01)
	for range 30 {
		if v := d.Observe(true, true); v != Inconclusive {
			t.Fatalf("verdict %s on concordant rows", v)
		}
	}
	var v Verdict
	for range 20 {
		v = d.Observe(false, true)
	}
	res := d.Result()
	if v != Rollback || res.Rows != 50 || res.StandbyOnly != 20 || res.LiveOnly != 0 ||
		res.LiveAccuracy != 0.6 || res.StandbyAccuracy != 1 || res.PValue != 1.0/1048576 {
		t.Errorf("decision %+v", res)
	}
	// final verdicts do not move
	d.Observe(true, false)
	if d.Result().Rows != 50 {
		t.Error("rows counted after the verdict")
	}
	b, _ := json.Marshal(d)
	back, err := RestoreDecider(b)
	if err != nil || back.Result() != d.Result() {
		t.Errorf("round trip: %+v, %v", back, err)
	}
}
