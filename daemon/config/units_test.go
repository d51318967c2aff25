package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/daemon/config"
)

func TestParseBytes(t *testing.T) {
	tests := []struct {
		in   string
		want config.Bytes
		str  string
	}{
		{"0", 0, "0"},
		{"512", 512, "512"},
		{"100k", 100_000, "100k"},
		{"100K", 100_000, "100k"},
		{"1G", 1_000_000_000, "1G"},
		{"512Mi", 512 << 20, "512Mi"},
		{"2Gi", 2 << 30, "2Gi"},
		{"2GiB", 2 << 30, "2Gi"},
		{"1.5Gi", 3 << 29, "1536Mi"},
		{"1024Ki", 1 << 20, "1Mi"},
		{"7Ei", 7 << 60, "7Ei"},
	}
	for _, tt := range tests {
		got, err := config.ParseBytes(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			continue
		}
		if s := got.String(); s != tt.str {
			t.Errorf("Bytes(%d).String() = %q, want %q", got, s, tt.str)
		}
		if back, err := config.ParseBytes(got.String()); err != nil || back != got {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d (round trip)", got.String(), back, err, got)
		}
	}
	for _, bad := range []string{"", "Gi", "-1", "+1", "2Gx", "1e3", "8Ei", "99999999999999999999", "1.5.5M", "NaN", "Inf", "0x10", "2 G i"} {
		if got, err := config.ParseBytes(bad); err == nil {
			t.Errorf("ParseBytes(%q) = %d, want an error", bad, got)
		} else if want := `invalid size "` + bad + `" (want e.g. 512Mi, 2Gi)`; err.Error() != want {
			t.Errorf("ParseBytes(%q) error = %q, want %q", bad, err, want)
		}
	}
}

func TestDurationString(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", 2 * time.Second: "2s", 10 * time.Minute: "10m", time.Hour: "1h",
		90 * time.Minute: "1h30m", 1500 * time.Millisecond: "1.5s", time.Hour + time.Second: "1h0m1s",
	} {
		if got := config.D(d).String(); got != want {
			t.Errorf("D(%v).String() = %q, want %q", d, got, want)
		}
	}
}

func TestCron(t *testing.T) {
	loc := time.UTC
	at := func(s string) time.Time {
		v, err := time.ParseInLocation("2006-01-02 15:04 Mon", s, loc)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		expr, from, want string
	}{
		{"0 3 * * *", "2026-03-10 02:59 Tue", "2026-03-10 03:00 Tue"},
		{"0 3 * * *", "2026-03-10 03:00 Tue", "2026-03-11 03:00 Wed"},
		{"*/15 * * * *", "2026-03-10 02:59 Tue", "2026-03-10 03:00 Tue"},
		{"5,35 8-9 * * mon-fri", "2026-03-13 09:40 Fri", "2026-03-16 08:05 Mon"},
		{"0 0 29 feb *", "2026-03-01 00:00 Sun", "2028-02-29 00:00 Tue"},
		{"0 0 1 * 7", "2026-03-01 00:00 Sun", "2026-03-08 00:00 Sun"}, // either day field matches
		{"@daily", "2026-12-31 23:59 Thu", "2027-01-01 00:00 Fri"},
		{"30 4 1/10 * *", "2026-03-02 00:00 Mon", "2026-03-11 04:30 Wed"},
	}
	for _, tt := range tests {
		c, err := config.ParseCron(tt.expr)
		if err != nil {
			t.Errorf("ParseCron(%q): %v", tt.expr, err)
			continue
		}
		if got, want := c.Next(at(tt.from)), at(tt.want); !got.Equal(want) {
			t.Errorf("ParseCron(%q).Next(%s) = %s, want %s", tt.expr, tt.from, got.Format("2006-01-02 15:04 Mon"), tt.want)
		}
	}
	bad := map[string]string{
		"":              `"" has 0 fields; want 5`,
		"60 * * * *":    `minute field: 60 is out of range 0-59`,
		"* * 0 * *":     `day-of-month field: 0 is out of range 1-31`,
		"* * * 13 *":    `month field: 13 is out of range 1-12`,
		"* * * * 8":     `day-of-week field: 8 is out of range 0-7`,
		"5-1 * * * *":   `minute field: range "5-1" runs backwards`,
		"*/0 * * * *":   `minute field: step "0" is not a number from 1 to 59`,
		"1,,2 * * * *":  `minute field: empty item in "1,,2"`,
		"x * * * *":     `minute field: "x" is not a number`,
		"-1 * * * *":    `minute field: "" is not a number`,
		"@reboot":       `"@reboot" is not a schedule`,
		"0 0 31 4,6 *":  `never runs`,
		"* * * * * *":   `has 6 fields`,
		"0 0 * foo *":   `month field: "foo" is not a number`,
		"0 0 * * sun-x": `day-of-week field: "x" is not a number`,
	}
	for expr, want := range bad {
		if _, err := config.ParseCron(expr); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseCron(%q) error = %v, want it to contain %q", expr, err, want)
		}
	}
}
