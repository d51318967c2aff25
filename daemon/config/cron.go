package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Cron is a parsed triggers.schedule. It lives here rather than with the scheduler so that
// `kiln pipelines validate` rejects exactly what the daemon would fail to run.
type Cron struct {
	minute, hour, dom, month, dow uint64 // bit i set: value i matches
	domAny, dowAny                bool   // the day field is * (or */S): see dayMatches
}

var cronMacros = map[string]string{
	"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
	"@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}

type cronField struct {
	name     string
	min, max int
	names    []string // names[i] is value min+i
}

var cronFields = [5]cronField{
	{name: "minute", min: 0, max: 59},
	{name: "hour", min: 0, max: 23},
	{name: "day-of-month", min: 1, max: 31},
	{name: "month", min: 1, max: 12, names: strings.Fields("jan feb mar apr may jun jul aug sep oct nov dec")},
	// 7 is Sunday as well as 0, as in Vixie cron.
	{name: "day-of-week", min: 0, max: 7, names: strings.Fields("sun mon tue wed thu fri sat")},
}

// ParseCron parses five fields (minute hour day-of-month month day-of-week) of *, N, N-M, */S,
// N-M/S and comma lists, with jan-dec and sun-sat names, or one of @hourly, @daily, @midnight,
// @weekly, @monthly, @yearly, @annually.
func ParseCron(expr string) (*Cron, error) {
	s := strings.TrimSpace(expr)
	if strings.HasPrefix(s, "@") {
		m, ok := cronMacros[strings.ToLower(s)]
		if !ok {
			return nil, fmt.Errorf("%q is not a schedule (macros: @hourly, @daily, @weekly, @monthly, @yearly)", clip(expr))
		}
		s = m
	}
	f := strings.Fields(s)
	if len(f) != 5 {
		return nil, fmt.Errorf("%q has %d fields; want 5: minute hour day-of-month month day-of-week (e.g. \"0 3 * * *\")", clip(expr), len(f))
	}
	var sets [5]uint64
	for i, spec := range cronFields {
		set, err := spec.parse(f[i])
		if err != nil {
			return nil, fmt.Errorf("%q: %s field: %v", clip(expr), spec.name, err)
		}
		sets[i] = set
	}
	c := &Cron{minute: sets[0], hour: sets[1], dom: sets[2], month: sets[3], dow: sets[4],
		domAny: f[2] == "*" || strings.HasPrefix(f[2], "*/"), dowAny: f[4] == "*" || strings.HasPrefix(f[4], "*/")}
	if c.dow&(1<<7) != 0 {
		c.dow |= 1
	}
	if c.dowAny && c.dom&^feasibleDays(c.month) == c.dom && c.dom != 0 {
		return nil, fmt.Errorf("%q never runs: no chosen month has such a day", clip(expr))
	}
	return c, nil
}

// feasibleDays are the days of month that exist in at least one of the chosen months.
func feasibleDays(months uint64) uint64 {
	days := uint64(0)
	for m := 1; m <= 12; m++ {
		if months&(1<<m) != 0 {
			n := time.Date(2024, time.Month(m)+1, 0, 0, 0, 0, 0, time.UTC).Day() // 2024 has Feb 29
			days |= (1<<(n+1) - 1) &^ 1
		}
	}
	return days
}

func (f cronField) value(s string) (int, error) {
	for i, n := range f.names {
		if strings.EqualFold(s, n) {
			return f.min + i, nil
		}
	}
	v, err := strconv.Atoi(s)
	if err != nil || s[0] == '+' || s[0] == '-' {
		return 0, fmt.Errorf("%q is not a number", clip(s))
	}
	if v < f.min || v > f.max {
		return 0, fmt.Errorf("%d is out of range %d-%d", v, f.min, f.max)
	}
	return v, nil
}

func (f cronField) parse(field string) (uint64, error) {
	var set uint64
	for part := range strings.SplitSeq(field, ",") {
		rng, stepStr, hasStep := strings.Cut(part, "/")
		lo, hi := f.min, f.max
		switch rng {
		case "*":
		case "":
			return 0, fmt.Errorf("empty item in %q", clip(field))
		default:
			a, b, isRange := strings.Cut(rng, "-")
			var err error
			if lo, err = f.value(a); err != nil {
				return 0, err
			}
			hi = lo
			if isRange {
				if hi, err = f.value(b); err != nil {
					return 0, err
				}
				if hi < lo {
					return 0, fmt.Errorf("range %q runs backwards", clip(rng))
				}
			} else if hasStep {
				hi = f.max // N/S means N-max/S, as in Vixie cron
			}
		}
		step := 1
		if hasStep {
			s, err := strconv.Atoi(stepStr)
			if err != nil || s < 1 || s > f.max {
				return 0, fmt.Errorf("step %q is not a number from 1 to %d", clip(stepStr), f.max)
			}
			step = s
		}
		for v := lo; v <= hi; v += step {
			set |= 1 << v
		}
	}
	return set, nil
}

func (c *Cron) dayMatches(t time.Time) bool {
	dom := c.dom&(1<<t.Day()) != 0
	dow := c.dow&(1<<int(t.Weekday())) != 0
	// Cron's old rule: when both day fields are restricted, either may match.
	switch {
	case c.domAny && c.dowAny:
		return true
	case c.domAny:
		return dow
	case c.dowAny:
		return dom
	}
	return dom || dow
}

// Next returns the first time after t that the schedule matches, in t's location, or the zero
// time when none comes within five years (30 February).
func (c *Cron) Next(t time.Time) time.Time {
	loc := t.Location()
	t = time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), 0, 0, loc).Add(time.Minute)
	limit := t.AddDate(5, 0, 0)
	for t.Before(limit) {
		switch {
		case c.month&(1<<int(t.Month())) == 0:
			t = time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, loc)
		case !c.dayMatches(t):
			t = time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, loc)
		case c.hour&(1<<t.Hour()) == 0:
			next := time.Date(t.Year(), t.Month(), t.Day(), t.Hour()+1, 0, 0, 0, loc)
			if !next.After(t) { // a DST fold can map hour+1 back onto t
				next = t.Add(time.Hour).Truncate(time.Minute)
			}
			t = next
		case c.minute&(1<<t.Minute()) == 0:
			t = t.Add(time.Minute)
		default:
			return t
		}
	}
	return time.Time{}
}
