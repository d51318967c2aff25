package gpu

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Request asks for Count whole GPUs with at least MinFree bytes of free
// memory each.
type Request struct {
	Count   int
	MinFree uint64
}

// String reads like the start of a placement error: "1 GPU with 8Gi free".
func (r Request) String() string {
	s := fmt.Sprintf("%d GPU", r.Count)
	if r.Count != 1 {
		s += "s"
	}
	if r.MinFree > 0 {
		s += " with " + FormatBytes(r.MinFree) + " free"
	}
	return s
}

// Lease is one GPU held by one run. The daemon persists leases; gpu only
// reads them.
type Lease struct {
	GPU    string // UUID
	Holder string // run id, e.g. "iris/r3"
}

// PlaceError says why a request cannot be placed now. The daemon queues the
// run and shows Error() as the reason.
type PlaceError struct {
	Request Request
	// Eligible is how many GPUs could have been given.
	Eligible int
	// Reasons names each GPU that could not, in index order
	// ("gpu0 leased to iris/r3"), or the null inventory's reason.
	Reasons []string
}

func (e *PlaceError) Error() string {
	var b strings.Builder
	b.WriteString("need ")
	b.WriteString(e.Request.String())
	if e.Eligible > 0 {
		fmt.Fprintf(&b, ", %d eligible", e.Eligible)
	}
	if len(e.Reasons) > 0 {
		b.WriteString(": ")
		b.WriteString(strings.Join(e.Reasons, ", "))
	}
	return b.String()
}

// Place picks req.Count GPUs for one run: healthy, not cordoned, not leased,
// not in MIG mode, with at least req.MinFree free memory, least loaded first
// (by GPU utilization, then memory used, then index). It returns their UUIDs,
// or a *PlaceError naming why each other GPU was passed over.
//
// Place is pure: the caller must hold its own lock from Place until the new
// lease is recorded, so that two runs never get the same GPU. cordoned maps
// UUID to the reason it was cordoned. A request for zero GPUs places
// trivially.
//
// MIG-enabled GPUs are skipped: a whole-GPU lease cannot use them, and
// kiln does not place on MIG devices yet.
func Place(s Snapshot, leases []Lease, cordoned map[string]string, req Request) ([]string, error) {
	if req.Count <= 0 {
		return nil, nil
	}
	if !s.Available {
		reason := s.Reason
		if reason == "" {
			reason = ReasonNoDriver
		}
		return nil, &PlaceError{Request: req, Reasons: []string{reason}}
	}
	holder := make(map[string]string, len(leases))
	for _, l := range leases {
		holder[l.GPU] = l.Holder
	}
	var ok []Device
	var reasons []string
	for _, d := range s.Devices {
		why := ""
		cordon, isCordoned := cordoned[d.UUID]
		switch {
		case !d.Health.Healthy:
			why = fmt.Sprintf("unhealthy (%s)", d.Health.Reason)
		case isCordoned && cordon != "":
			why = fmt.Sprintf("cordoned (%s)", cordon)
		case isCordoned:
			why = "cordoned"
		case holder[d.UUID] != "":
			why = "leased to " + holder[d.UUID]
		case d.MIG.Enabled:
			why = "in MIG mode"
		case d.Memory.Free < req.MinFree:
			why = fmt.Sprintf("has %s free", FormatBytes(d.Memory.Free))
		}
		if why != "" {
			reasons = append(reasons, fmt.Sprintf("gpu%d %s", d.Index, why))
			continue
		}
		ok = append(ok, d)
	}
	if len(s.Devices) == 0 {
		reasons = append(reasons, "no GPUs")
	}
	if len(ok) < req.Count {
		return nil, &PlaceError{Request: req, Eligible: len(ok), Reasons: reasons}
	}
	slices.SortStableFunc(ok, func(a, b Device) int {
		return cmp.Or(
			cmp.Compare(a.Telemetry.UtilGPU, b.Telemetry.UtilGPU),
			cmp.Compare(a.Memory.Used, b.Memory.Used),
			cmp.Compare(a.Index, b.Index),
		)
	})
	out := make([]string, req.Count)
	for i := range out {
		out[i] = ok[i].UUID
	}
	return out, nil
}

// FormatBytes writes n in binary units as the spec's quantities are written
// ("8Gi", "1.5Gi", "512Mi", "100").
func FormatBytes(n uint64) string {
	units := []string{"Ki", "Mi", "Gi", "Ti", "Pi"}
	if n < 1024 {
		return strconv.FormatUint(n, 10)
	}
	v := float64(n)
	u := ""
	for _, next := range units {
		if v < 1024 {
			break
		}
		v /= 1024
		u = next
	}
	return strconv.FormatFloat(float64(int64(v*10+0.5))/10, 'f', -1, 64) + u
}
