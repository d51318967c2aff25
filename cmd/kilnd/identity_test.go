package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/daemon/api"
)

// TestSecondInstallationLeavesTheFirstsContainers is DESIGN.md's "Container
// identity" on one containerd namespace shared by two state dirs: the
// defect it fixes is a fresh kilnd that named its first model cancer/m1
// again, evaluated it through the container an earlier installation left
// running under that name, and then killed that container. Here the second
// kilnd trains and serves its own cancer/m1 beside the first's, which keeps
// running with the same process while the first kilnd still serves from it;
// the second reports it (event, doctor) and removes it only when asked
// (kiln gc --foreign), a dry run first.
func TestSecondInstallationLeavesTheFirstsContainers(t *testing.T) {
	const ns = "kiln-test-identity"
	addr := containerdAddr(t)
	a, _ := startLoop(t, ns, cancerSpec)
	waitLong(t, 3*time.Minute, "the first installation's model live", func() bool { return modelsOf(t, a)["cancer/m1"].State == "live" })
	first := servingContainers(t, addr, ns)
	if len(first) != 1 {
		t.Fatalf("serving containers of the first installation = %v; want one", first)
	}
	ctrA := first[0]
	pidA := taskPid(t, addr, ns, ctrA)

	// The second installation, side by side, on the same namespace.
	b, _ := startLoop(t, ns, cancerSpec)
	waitLong(t, 3*time.Minute, "the second installation's model decided", func() bool {
		s := modelsOf(t, b)["cancer/m1"].State
		return s == "live" || s == "rejected"
	})
	mB := modelsOf(t, b)["cancer/m1"]
	if mB.State != "live" || mB.Metrics["accuracy"] < 0.9 {
		t.Fatalf("second installation's cancer/m1 = %s, metrics %v (%s); want live, accuracy >= 0.9 measured through its own container", mB.State, mB.Metrics, mB.Reason)
	}
	both := servingContainers(t, addr, ns)
	ctrB := ""
	for _, id := range both {
		if id != ctrA {
			ctrB = id
		}
	}
	if len(both) != 2 || ctrB == "" || !strings.HasSuffix(ctrB, "-cancer-m1") {
		t.Fatalf("serving containers = %v; want the first's %s and the second's own cancer/m1 beside it", both, ctrA)
	}
	if pid := taskPid(t, addr, ns, ctrA); pid != pidA {
		t.Errorf("the first installation's %s runs as pid %s, was %s; want it untouched", ctrA, pid, pidA)
	}
	if out, err := predictThrough(t, a); err != nil || len(out) == 0 {
		t.Errorf("the first kilnd's endpoint: %v (%q); want it still serving from its own container", err, out)
	}
	ev := findEvent(eventsOf(t, b), "container.foreign")
	if ev == nil || !slices.Contains(ev.Refs, ctrA) || ev.Details["kind"] != "serve" || ev.Details["installation"] == "" {
		t.Errorf("second kilnd's container.foreign event = %+v; want one naming %s, its kind and installation", ev, ctrA)
	}
	if ev := findEvent(eventsOf(t, b), "container.removed"); ev != nil {
		t.Errorf("second kilnd removed a container by itself: %+v", ev)
	}

	doc := doctorOf(t, b)
	if c := findCheck(doc, "foreign-containers"); c.Result != api.CheckWarn || !strings.Contains(c.Detail, ctrA) ||
		strings.Contains(c.Detail, ctrB) || !strings.Contains(c.Fix, "kiln gc --foreign") {
		t.Errorf("doctor foreign-containers = %+v; want a warning naming %s alone, with the fix kiln gc --foreign", c, ctrA)
	}

	// The first kilnd goes; its container stays until a person removes it.
	if err := a.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := a.wait(); err != nil {
		t.Fatalf("first kilnd stop: %v", err)
	}
	out, stderr, err := b.kiln(nil, "gc", "--foreign", "--dry-run", "-o", "json")
	var rep api.GCReport
	if err != nil || json.Unmarshal([]byte(out), &rep) != nil || !slices.Equal(rep.Foreign, []string{ctrA}) {
		t.Fatalf("kiln gc --foreign --dry-run = %q, %v, %s; want %s listed", out, err, stderr, ctrA)
	}
	if pid := taskPid(t, addr, ns, ctrA); pid != pidA {
		t.Errorf("after the dry run %s runs as pid %q; want %s, untouched", ctrA, pid, pidA)
	}
	out, stderr, err = b.kiln(nil, "gc", "--foreign")
	if err != nil || !strings.Contains(out, "foreign containers "+ctrA) {
		t.Fatalf("kiln gc --foreign = %q, %v, %s; want %s removed", out, err, stderr, ctrA)
	}
	if got := servingContainers(t, addr, ns); !slices.Equal(got, []string{ctrB}) {
		t.Errorf("serving containers after gc --foreign = %v; want the second's %s alone", got, ctrB)
	}
	if out, err := predictThrough(t, b); err != nil || len(out) == 0 {
		t.Errorf("the second kilnd's endpoint after gc --foreign: %v (%q); want it serving", err, out)
	}
	if c := findCheck(doctorOf(t, b), "foreign-containers"); c.Result != api.CheckOK {
		t.Errorf("doctor foreign-containers after gc = %+v; want ok", c)
	}
}

// servingContainers lists the namespace's serving containers, sorted.
func servingContainers(t *testing.T, addr, ns string) []string {
	t.Helper()
	out, err := exec.Command("ctr", "-a", addr, "-n", ns, "containers", "ls", "-q").Output()
	if err != nil {
		t.Fatalf("ctr containers ls: %v", err)
	}
	var ids []string
	for _, id := range strings.Fields(string(out)) {
		if strings.HasPrefix(id, "kiln-serve-") {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// taskPid is the pid of a container's task as ctr reports it ("" if none).
func taskPid(t *testing.T, addr, ns, id string) string {
	t.Helper()
	out, _ := exec.Command("ctr", "-a", addr, "-n", ns, "tasks", "ls").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == id && f[2] == "RUNNING" {
			return f[1]
		}
	}
	return ""
}

// predictThrough sends the first rows of the example data to k's endpoint.
func predictThrough(t *testing.T, k *kilnd) (string, error) {
	t.Helper()
	data, err := os.ReadFile("../../examples/tabular/data/breast_cancer.csv")
	if err != nil {
		return "", err
	}
	rows, _ := featureRows(t, data, "diagnosis", 5)
	cmd := exec.Command(filepath.Join(binDir, "kiln"), "--socket", k.socket(), "predict", "cancer")
	cmd.Stdin = strings.NewReader(rows)
	out, err := cmd.Output()
	return strings.TrimSpace(string(out)), err
}

func doctorOf(t *testing.T, k *kilnd) api.Doctor {
	t.Helper()
	// doctor exits 1 when a check fails; the JSON is printed either way.
	out, stderr, _ := k.kiln(nil, "doctor", "-o", "json")
	var doc api.Doctor
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("kiln doctor -o json = %q (%s): %v", out, stderr, err)
	}
	return doc
}
