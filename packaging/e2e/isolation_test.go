package e2e

import (
	"context"
	"strconv"
	"strings"
	"testing"
)

// workloadBase is the sysusers.d name kiln-workloads' id: the first of the
// block kilnd gives one id each to the containers it runs.
const workloadBase = 0x70000000

// strangerUser is a local account in neither kiln group, as a site's first
// human account would be.
const strangerUser = "stranger"

// workloadsIsolated checks, on the installed box after the quick start, that
// the serving container runs under an id of kiln's reserved block that no
// login account has, and that a local account outside the kiln groups can
// neither signal it, read its model through /proc, reach its socket's
// folder, nor list the state kilnd keeps for runs, models and blobs.
func workloadsIsolated(t *testing.T, ctx context.Context, m *machine) {
	if got := strings.TrimSpace(m.must(ctx, "getent passwd kiln-workloads | cut -d: -f3")); got != strconv.Itoa(workloadBase) {
		t.Errorf("kiln-workloads has uid %q, want %d (sysusers.d)", got, workloadBase)
	}
	serve := kilnLabelled(t, ctx, m, "serve")
	if len(serve) == 0 {
		t.Fatal("no serving container after the quick start")
	}
	pid := strings.TrimSpace(m.must(ctx, "ctr -n kiln tasks ls | awk '$1==\""+serve[0]+"\" {print $2}'"))
	uid, err := strconv.Atoi(strings.TrimSpace(m.must(ctx, "stat -c %u /proc/"+pid)))
	if err != nil || uid <= workloadBase || uid > workloadBase+0xffff {
		t.Errorf("serving process %s runs as uid %d (%v), want one of the block above %d", pid, uid, err, workloadBase)
	}
	if out, err := m.sh(ctx, "getent passwd "+strconv.Itoa(uid)); err == nil {
		t.Errorf("uid %d belongs to an account: %s", uid, out)
	}
	sock := strings.TrimSpace(m.must(ctx, "find /run/kiln -name serve.sock | head -n1"))
	if sock == "" {
		t.Fatal("no serve.sock under /run/kiln")
	}
	m.must(ctx, "useradd --create-home "+strangerUser)
	as := func(cmd string) (string, error) {
		return m.sh(ctx, "runuser -u "+strangerUser+" -- sh -c "+shellQuote(cmd))
	}
	// The control: the account can run commands and see the process.
	if out, err := as("test -d /proc/" + pid); err != nil {
		t.Fatalf("the stranger cannot run a command (the checks below would pass vacuously): %v %s", err, out)
	}
	for _, probe := range []string{
		"kill -0 " + pid,
		"ls /proc/" + pid + "/root/opt/ml/model",
		"ls " + sock[:strings.LastIndex(sock, "/")],
		"test -w " + sock + " && test -r " + sock,
		"ls /var/lib/kiln/models",
		"ls /var/lib/kiln/runs",
		"ls /var/lib/kiln/blobs",
	} {
		if out, err := as(probe); err == nil {
			t.Errorf("a local account outside the kiln groups could: %s\n%s", probe, out)
		}
	}
}
