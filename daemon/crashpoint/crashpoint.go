// Package crashpoint owns kilnd's fault-injection points: named places in
// the daemon where a crash test can have kilnd kill itself with SIGKILL, so
// a crash lands exactly between two steps (after a blob is written and
// before its record commits, after a run is persisted and before its
// container starts) rather than wherever a timer happens to fire.
//
// The composition root arms at most one point per process, from the
// KILN_CRASHPOINT environment variable ("name" or "name:n", the nth hit);
// code calls Hit(name) at each point. Unarmed, Hit is one atomic load: the
// points stay compiled into the shipped daemon, so the binary the crash
// test kills is the binary users run.
package crashpoint

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// EnvVar names the variable Arm's caller reads.
const EnvVar = "KILN_CRASHPOINT"

type armed struct {
	name string
	nth  int64
	hits atomic.Int64
}

var point atomic.Pointer[armed]

// Arm sets the one point of this process from spec, "name" or "name:n"
// (n >= 1, the hit that kills); "" disarms. A malformed spec is an error
// naming the variable, so a typo in a test cannot pass as "never hit".
func Arm(spec string) error {
	if spec == "" {
		point.Store(nil)
		return nil
	}
	name, n, found := strings.Cut(spec, ":")
	a := &armed{name: name, nth: 1}
	if found {
		v, err := strconv.ParseInt(n, 10, 64)
		if err != nil || v < 1 {
			return fmt.Errorf("%s=%q: the count after ':' must be a whole number >= 1", EnvVar, spec)
		}
		a.nth = v
	}
	if name == "" {
		return fmt.Errorf("%s=%q: no point name", EnvVar, spec)
	}
	point.Store(a)
	return nil
}

// Hit kills the process with SIGKILL when name is the armed point and this
// is its nth hit. SIGKILL, not os.Exit: no deferred call, no flush, no
// drain runs, which is what a power cut or the OOM killer leaves behind.
// The line on stderr lets the test tell a point that fired from one never
// reached.
func Hit(name string) {
	a := point.Load()
	if a == nil || a.name != name {
		return
	}
	if a.hits.Add(1) != a.nth {
		return
	}
	fmt.Fprintf(os.Stderr, "crashpoint: %s hit %d: SIGKILL\n", name, a.nth)
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // SIGKILL cannot be caught; never return into the step
}
