package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration written as Go writes durations ("2s", "10m", "1h30m") in YAML and
// JSON, so specs and API answers read the same.
type Duration struct{ time.Duration }

// D is shorthand for tests and defaults.
func D(d time.Duration) Duration { return Duration{d} }

func (d Duration) String() string {
	s := d.Duration.String()
	// time.Duration prints 10m as "10m0s"; people write "10m".
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

func parseDuration(s string) (Duration, error) {
	v, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil || v < 0 {
		return Duration{}, fmt.Errorf("invalid duration %q (want e.g. 30s, 10m, 1h)", clip(s))
	}
	return Duration{v}, nil
}

// UnmarshalYAML accepts a scalar such as 2s; a bare number other than 0 is refused because its
// unit would be a guess.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a duration such as 30s, got %s", describe(n))
	}
	v, err := parseDuration(n.Value)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration string such as \"30s\", got %s", b)
	}
	v, err := parseDuration(s)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// Bytes is a size in bytes, written as Kubernetes writes quantities: 512Mi and 2Gi are powers of
// 1024, 1G and 100k powers of 1000, a plain integer is bytes. A trailing B is tolerated (2GiB).
type Bytes int64

const (
	KiB Bytes = 1 << 10
	MiB Bytes = 1 << 20
	GiB Bytes = 1 << 30
	TiB Bytes = 1 << 40
)

var byteUnits = []struct {
	suffix string
	mult   int64
}{
	// Longest first, so "Gi" wins over "G".
	{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40}, {"Pi", 1 << 50}, {"Ei", 1 << 60},
	{"k", 1e3}, {"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}, {"P", 1e15}, {"E", 1e18},
}

var errSize = errors.New("bad size")

// ParseBytes parses "2Gi", "512Mi", "1G", "100k", "1.5Gi" or a plain integer.
func ParseBytes(s string) (Bytes, error) {
	v, err := parseBytes(s)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q (want e.g. 512Mi, 2Gi)", clip(s))
	}
	return v, nil
}

func parseBytes(s string) (Bytes, error) {
	t := strings.TrimSpace(s)
	t = strings.TrimSuffix(t, "B")
	mult := int64(1)
	for _, u := range byteUnits {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	if t == "" || t[0] == '+' || t[0] == '-' {
		return 0, errSize
	}
	if i, err := strconv.ParseInt(t, 10, 64); err == nil {
		if i > math.MaxInt64/mult {
			return 0, errSize
		}
		return Bytes(i * mult), nil
	}
	// Fractions (1.5Gi) are rounded down to whole bytes.
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || strings.ContainsAny(t, "eEnNxXpP_") || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, errSize
	}
	f *= float64(mult)
	if f >= math.MaxInt64 {
		return 0, errSize
	}
	return Bytes(f), nil
}

// String writes the shortest exact form: 2Gi, 1G, 100k, or plain bytes.
func (b Bytes) String() string {
	if b == 0 {
		return "0"
	}
	if b < 0 {
		return strconv.FormatInt(int64(b), 10)
	}
	bin := []string{"Ki", "Mi", "Gi", "Ti", "Pi", "Ei"}
	for i := len(bin) - 1; i >= 0; i-- {
		if m := int64(1) << (10 * (i + 1)); int64(b)%m == 0 {
			return strconv.FormatInt(int64(b)/m, 10) + bin[i]
		}
	}
	dec := []string{"k", "M", "G", "T", "P", "E"}
	for i := len(dec) - 1; i >= 0; i-- {
		if m := int64(math.Pow10(3 * (i + 1))); int64(b)%m == 0 {
			return strconv.FormatInt(int64(b)/m, 10) + dec[i]
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

func (b *Bytes) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a size such as 2Gi, got %s", describe(n))
	}
	v, err := ParseBytes(n.Value)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

func (b Bytes) MarshalYAML() (any, error) { return b.String(), nil }

func (b Bytes) MarshalJSON() ([]byte, error) { return json.Marshal(b.String()) }

// UnmarshalJSON takes what MarshalJSON writes, and plain JSON integers.
func (b *Bytes) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		var i int64
		if err := json.Unmarshal(data, &i); err != nil || i < 0 {
			return fmt.Errorf("want a size such as \"2Gi\", got %s", data)
		}
		*b = Bytes(i)
		return nil
	}
	v, err := ParseBytes(s)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// Age is a Duration that also takes whole days ("14d"), as retention is written.
type Age struct{ Duration }

func (a Age) String() string {
	if d := a.Duration.Duration; d > 0 && d%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	}
	return a.Duration.String()
}

func parseAge(s string) (Age, error) {
	t := strings.TrimSpace(s)
	if days, ok := strings.CutSuffix(t, "d"); ok {
		n, err := strconv.ParseUint(days, 10, 16)
		if err != nil {
			return Age{}, fmt.Errorf("invalid age %q (want e.g. 14d, 36h, 90m)", clip(s))
		}
		return Age{D(time.Duration(n) * 24 * time.Hour)}, nil
	}
	d, err := parseDuration(t)
	if err != nil {
		return Age{}, fmt.Errorf("invalid age %q (want e.g. 14d, 36h, 90m)", clip(s))
	}
	return Age{d}, nil
}

func (a *Age) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want an age such as 14d, got %s", describe(n))
	}
	v, err := parseAge(n.Value)
	if err != nil {
		return err
	}
	*a = v
	return nil
}

func (a Age) MarshalYAML() (any, error) { return a.String(), nil }

func (a Age) MarshalJSON() ([]byte, error) { return json.Marshal(a.String()) }

func (a *Age) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want an age string such as \"14d\", got %s", b)
	}
	v, err := parseAge(s)
	if err != nil {
		return err
	}
	*a = v
	return nil
}
