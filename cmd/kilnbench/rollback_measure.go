package main

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// rbMeasured is what the load's records say of the swaps, in ms (wall
// clock, kilnd's event times against the client's send and answer times).
type rbMeasured struct {
	// total: alarm -> the standby's answer to the first request sent at or
	// after the alarm (rollback.swap_p90_ms's samples).
	total []float64
	// The split: alarm -> model.rolled_back_to event; that event -> the
	// standby's answer; alarm -> the sending of that request.
	toRolled, rolledToAnswer, sentAfter []float64
	// late: requests sent after the standby's first answer yet answered by
	// the rolled-back model (the flip is atomic: must be 0). missing: swaps
	// with no standby answer at all.
	late, missing int
	by            map[string]int // alarms by what raised them
	maxSwap       string
}

// rbMeasure reads each swap off the load's records (sorted here by send time).
func rbMeasure(reqs []rbReq, swaps []*rbSwap) rbMeasured {
	slices.SortFunc(reqs, func(a, b rbReq) int { return cmp.Compare(a.start, b.start) })
	m := rbMeasured{by: map[string]int{}}
	worst := -1.0
	for _, s := range swaps {
		m.by[s.by]++
		ta := s.alarm.UnixNano()
		from, _ := slices.BinarySearchFunc(reqs, ta, func(r rbReq, t int64) int { return cmp.Compare(r.start, t) })
		first := int64(-1)
		var firstSent int64
		for _, q := range reqs[from:] {
			if first >= 0 && q.start > first {
				break // sent after the first standby answer: no earlier answer can follow
			}
			if q.model == s.good && (first < 0 || q.end < first) {
				first, firstSent = q.end, q.start
			}
		}
		if first < 0 {
			m.missing++
			continue
		}
		// Once the standby answered a request, every request sent after
		// that answer must be the standby's (checked for a second after).
		for _, q := range reqs[from:] {
			if q.start > first+int64(time.Second) {
				break
			}
			if q.start > first && q.model == s.bad {
				m.late++
			}
		}
		ms := float64(first-ta) / 1e6
		m.total = append(m.total, ms)
		m.toRolled = append(m.toRolled, float64(s.rolled.Sub(s.alarm))/1e6)
		m.rolledToAnswer = append(m.rolledToAnswer, float64(first-s.rolled.UnixNano())/1e6)
		m.sentAfter = append(m.sentAfter, float64(firstSent-ta)/1e6)
		if ms > worst {
			worst = ms
			m.maxSwap = fmt.Sprintf("%s->%s, alarm by %s", s.bad, s.good, s.by)
		}
	}
	return m
}
