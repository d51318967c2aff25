package main

import "math"

// adwin is ADWIN2 (Bifet and Gavaldà 2007) written after MOA's
// moa.classifiers.core.driftdetection.ADWIN line by line: exponential
// histogram of buckets in rows of up to maxBuckets+1 (row i holds buckets of
// 2^i items, newest row first), the cut checked every clock items over every
// bucket boundary from the oldest, mintMinWinLength guarding both
// sub-windows, and the "Formula Gener 2008" cut with its variance term. It
// is the benchmark's reference detector, not kiln code.
type adwin struct {
	delta        float64
	time         int
	clock        int
	width        int
	total        float64
	variance     float64
	lastRow      int
	rows         []*adwinRow // rows[0] is MOA's head (size-1 buckets)
	minWinLength int
}

const (
	adwinMaxBuckets       = 5
	adwinMinLongitudWidth = 10 // mintMinimLongitudWindow
)

type adwinRow struct {
	size     int
	total    [adwinMaxBuckets + 1]float64
	variance [adwinMaxBuckets + 1]float64
}

func (r *adwinRow) insert(total, variance float64) {
	r.total[r.size], r.variance[r.size] = total, variance
	r.size++
}

// compress drops the n oldest buckets (MOA's compressBucketsRow).
func (r *adwinRow) compress(n int) {
	for k := n; k <= adwinMaxBuckets; k++ {
		r.total[k-n], r.variance[k-n] = r.total[k], r.variance[k]
	}
	for k := 1; k <= n; k++ {
		r.total[adwinMaxBuckets-k+1], r.variance[adwinMaxBuckets-k+1] = 0, 0
	}
	r.size -= n
}

func newADWIN(delta float64) *adwin {
	return &adwin{delta: delta, clock: 32, rows: []*adwinRow{{}}, minWinLength: 5}
}

func bucketSize(row int) int { return 1 << row }

// add is MOA's setInput: it reports a detected change.
func (a *adwin) add(x float64) bool {
	change := false
	a.time++
	a.insertElement(x)
	if a.time%a.clock == 0 && a.width > adwinMinLongitudWidth {
		reduce := true
		for reduce {
			reduce = false
			exit := false
			n0, n1 := 0, a.width
			u0, u1 := 0.0, a.total
			v0, v1 := 0.0, a.variance
			i := a.lastRow
			for ri := len(a.rows) - 1; !exit && ri >= 0; ri-- {
				cur := a.rows[ri]
				for k := 0; k <= cur.size-1; k++ {
					n2 := float64(bucketSize(i))
					u2 := cur.total[k]
					if n0 > 0 {
						d := u0/float64(n0) - u2/n2
						v0 += cur.variance[k] + float64(n0)*n2*d*d/(float64(n0)+n2)
					}
					if n1 > 0 {
						d := u1/float64(n1) - u2/n2
						v1 -= cur.variance[k] + float64(n1)*n2*d*d/(float64(n1)+n2)
					}
					n0 += bucketSize(i)
					n1 -= bucketSize(i)
					u0 += cur.total[k]
					u1 -= cur.total[k]
					if i == 0 && k == cur.size-1 {
						exit = true
						break
					}
					abs := u0/float64(n0) - u1/float64(n1)
					if n1 > a.minWinLength+1 && n0 > a.minWinLength+1 && a.cut(n0, n1, abs) {
						reduce, change = true, true
						if a.width > 0 {
							a.deleteElement()
							exit = true
							break
						}
					}
				}
				i--
			}
		}
	}
	return change
}

func (a *adwin) cut(n0, n1 int, abs float64) bool {
	n := float64(a.width)
	dd := math.Log(2 * math.Log(n) / a.delta)
	v := a.variance / float64(a.width)
	m := 1/float64(n0-a.minWinLength+1) + 1/float64(n1-a.minWinLength+1)
	eps := math.Sqrt(2*m*v*dd) + 2.0/3*dd*m
	return math.Abs(abs) > eps
}

func (a *adwin) insertElement(x float64) {
	a.width++
	a.rows[0].insert(x, 0)
	inc := 0.0
	if a.width > 1 {
		d := x - a.total/float64(a.width-1)
		inc = float64(a.width-1) * d * d / float64(a.width)
	}
	a.variance += inc
	a.total += x
	a.compressBuckets()
}

// deleteElement removes the oldest bucket (MOA's deleteElement, LIFO).
func (a *adwin) deleteElement() int {
	node := a.rows[len(a.rows)-1]
	n1 := bucketSize(a.lastRow)
	a.width -= n1
	a.total -= node.total[0]
	u1 := node.total[0] / float64(n1)
	d := u1 - a.total/float64(a.width)
	a.variance -= node.variance[0] + float64(n1)*float64(a.width)*d*d/float64(n1+a.width)
	node.compress(1)
	if node.size == 0 {
		a.rows = a.rows[:len(a.rows)-1]
		a.lastRow--
	}
	return n1
}

func (a *adwin) compressBuckets() {
	for i := 0; i < len(a.rows); i++ {
		cur := a.rows[i]
		if cur.size != adwinMaxBuckets+1 {
			break
		}
		if i+1 == len(a.rows) {
			a.rows = append(a.rows, &adwinRow{})
			a.lastRow++
		}
		next := a.rows[i+1]
		n := float64(bucketSize(i))
		u1, u2 := cur.total[0]/n, cur.total[1]/n
		inc := n * n * (u1 - u2) * (u1 - u2) / (n + n)
		next.insert(cur.total[0]+cur.total[1], cur.variance[0]+cur.variance[1]+inc)
		cur.compress(2)
		if next.size <= adwinMaxBuckets {
			break
		}
	}
}
