package crashpoint

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

func TestArmRejectsMalformed(t *testing.T) {
	for _, spec := range []string{"x:0", "x:-1", "x:y", ":3"} {
		if err := Arm(spec); err == nil || !strings.Contains(err.Error(), EnvVar) {
			t.Errorf("Arm(%q) = %v; want an error naming %s", spec, err, EnvVar)
		}
	}
	if err := Arm(""); err != nil {
		t.Errorf("Arm(\"\") = %v; want nil", err)
	}
}

// TestHitKillsOnNthHit runs this test binary again as a child that arms a
// point and hits it: the child must die by SIGKILL on the third hit, not
// before, and hits of other names must not count.
func TestHitKillsOnNthHit(t *testing.T) {
	if os.Getenv("CRASHPOINT_CHILD") == "1" {
		if err := Arm(os.Getenv(EnvVar)); err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= 5; i++ {
			Hit("other")
			os.Stdout.WriteString("before " + string(rune('0'+i)) + "\n")
			Hit("p")
		}
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHitKillsOnNthHit$")
	cmd.Env = append(os.Environ(), "CRASHPOINT_CHILD=1", EnvVar+"=p:3")
	out, err := cmd.Output()
	ee, ok := err.(*exec.ExitError)
	if !ok {
		t.Fatalf("child: %v, output %q; want death by SIGKILL", err, out)
	}
	if ws := ee.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child ended %v; want SIGKILL", err)
	}
	if got := strings.Fields(string(out)); strings.Join(got, " ") != "before 1 before 2 before 3" {
		t.Errorf("child printed %q; want it killed at the third hit of p", out)
	}
	if !strings.Contains(string(ee.Stderr), "crashpoint: p hit 3") {
		t.Errorf("child stderr %q lacks the crashpoint line", ee.Stderr)
	}
}

func TestUnarmedHitIsFree(t *testing.T) {
	_ = Arm("")
	if n := testing.AllocsPerRun(100, func() { Hit("ingest.after-blob-put") }); n != 0 {
		t.Errorf("unarmed Hit allocates %v times; want 0", n)
	}
}
