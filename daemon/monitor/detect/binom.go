package detect

import "math"

// logChoose is ln C(n, k).
func logChoose(n, k int) float64 {
	a, _ := math.Lgamma(float64(n + 1))
	b, _ := math.Lgamma(float64(k + 1))
	c, _ := math.Lgamma(float64(n - k + 1))
	return a - b - c
}

// binomPMF is P(Binomial(n, p) = k) for 0 < p < 1.
func binomPMF(n, k int, p float64) float64 {
	if k < 0 || k > n {
		return 0
	}
	return math.Exp(logChoose(n, k) + float64(k)*math.Log(p) + float64(n-k)*math.Log1p(-p))
}

// binomCDF is P(Binomial(n, p) <= k), summed term by term from the tail's
// boundary (its largest term) outwards, so it is exact up to rounding; n is
// at most tens of thousands here.
func binomCDF(n, k int, p float64) float64 {
	switch {
	case k < 0:
		return 0
	case k >= n || p <= 0:
		return 1
	case p >= 1:
		return 0
	}
	if float64(k) < float64(n)*p {
		return tailSum(n, k, p, -1)
	}
	return math.Max(0, 1-tailSum(n, k+1, p, +1))
}

// tailSum is P(X <= k) (dir -1) or P(X >= k) (dir +1) for X ~ Binomial(n, p),
// where k lies in that tail (its boundary term is the tail's largest).
func tailSum(n, k int, p float64, dir int) float64 {
	t := binomPMF(n, k, p)
	sum := t
	odds := p / (1 - p)
	for j := k; t > 0; {
		if dir < 0 {
			if j == 0 {
				break
			}
			t *= float64(j) / float64(n-j+1) / odds // P(j-1) from P(j)
			j--
		} else {
			if j == n {
				break
			}
			t *= float64(n-j) / float64(j+1) * odds // P(j+1) from P(j)
			j++
		}
		sum += t
		if t < sum*1e-18 {
			break
		}
	}
	return math.Min(sum, 1)
}

// SignTestP is the exact one-sided p-value of the sign test: the probability
// that a fair coin gives at least wins heads in n tosses, P(Binomial(n, 1/2)
// >= wins).
func SignTestP(wins, n int) float64 {
	if wins <= 0 {
		return 1
	}
	if wins > n {
		return 0
	}
	// P(X >= w) = P(X <= n-w) by symmetry.
	return binomCDF(n, n-wins, 0.5)
}
