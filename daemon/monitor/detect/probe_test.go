package detect

import ("testing";"time")

func TestProbe(t *testing.T) {
	for _, q := range []float64{0.08, 0.02, 0.005, 0.3} {
		for _, r := range []float64{1.5, 2.25, 3.375} {
			t0 := time.Now()
			p, err := calibrate(q, r, 0.01*0.9/3, 100000)
			t.Logf("q %v r %v %+v err %v %v fa=%v", q, r, p, err, time.Since(t0), falseAlarmProb(int(p.Up),int(p.Down),int(p.H),q,100000))
		}
	}
}
