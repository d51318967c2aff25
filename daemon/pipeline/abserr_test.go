package pipeline

import "testing"

func TestAbsErrQuantile(t *testing.T) {
	truth := []string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10"}
	pred := []string{"1", "2", "3", "4", "5", "6", "7", "8", "19", "30"} // errors 0 x8, 10, 20
	if got := absErrQuantile(truth, pred, 0.9); got != 10 {
		t.Errorf("p90 |error| = %v, want 10 (the 9th of 10 sorted errors)", got)
	}
	if got := absErrQuantile(nil, nil, 0.9); got != 0 {
		t.Errorf("p90 of nothing = %v, want 0", got)
	}
}
