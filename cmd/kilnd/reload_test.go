package main

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// reload runs `kilnd --reload` against k, as the unit's ExecReload does for
// `systemctl reload kilnd`.
func (k *kilnd) reload() (stdout, stderr string, err error) {
	cmd := exec.Command(filepath.Join(binDir, "kilnd"), "--reload", "--root", k.root)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

// checkRejected is what an operator sees once a reload rejected
// etc/kiln/pipelines/fans.yaml (bad on line 2) while fans and pumps run: the
// STATUS line leads with the cause, `systemctl reload` (kilnd --reload)
// fails with it on one line, and `kiln pipelines` lists the old set plus the
// rejected file with its error.
func checkRejected(t *testing.T, k *kilnd, root string) {
	t.Helper()
	fans := filepath.Join(root, "etc/kiln/pipelines/fans.yaml")
	if msg := k.expect("STATUS=reload rejected: "); !strings.Contains(msg, "STATUS=reload rejected: "+fans+":2:") {
		t.Errorf("STATUS after a rejected reload = %q; want it to start with reload rejected: %s:2:", msg, fans)
	}

	out, stderr, err := k.reload()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(stderr, "reload rejected") ||
		!strings.Contains(stderr, fans+":2:") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Errorf("kilnd --reload of a bad spec: %v, stdout %q, stderr %q; want exit 1 and one line naming %s:2:", err, out, stderr, fans)
	}

	ps, err := k.client().Pipelines(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var loaded []string
	rejected := 0
	for _, p := range ps {
		switch p.State {
		case "loaded":
			loaded = append(loaded, p.Pipeline)
		case "rejected":
			rejected++
			if p.ID != "fans" || p.Pipeline != "fans" || p.File != fans || !strings.HasPrefix(p.Error, fans+":2:") || p.Created.IsZero() {
				t.Errorf("rejected row = %+v; want fans, %s, its error at line 2 and a time", p, fans)
			}
		default:
			t.Errorf("pipeline row %+v: unknown state", p)
		}
	}
	if strings.Join(loaded, ",") != "fans,pumps" || rejected != 1 {
		t.Errorf("pipelines after a rejected reload: loaded %v and %d rejected; want the old fans,pumps and 1 rejected", loaded, rejected)
	}

	table, stderr, err := k.kiln(nil, "pipelines")
	if err != nil {
		t.Fatalf("kiln pipelines: %v: %s", err, stderr)
	}
	if !regexp.MustCompile(`(?m)^fans +rejected +.* `+regexp.QuoteMeta(fans)+`$`).MatchString(table) ||
		!strings.Contains(table, "rejected "+fans+": "+fans+":2:") {
		t.Errorf("kiln pipelines:\n%s\nwant a fans row in state rejected and its error", table)
	}
}

// checkReloadOK: once the folder is good again, STATUS is back to ready and
// `systemctl reload kilnd` (kilnd --reload) succeeds, saying what changed.
func checkReloadOK(t *testing.T, k *kilnd) {
	t.Helper()
	k.expect("STATUS=ready: ")
	if out, stderr, err := k.reload(); err != nil || !strings.Contains(out, "pipelines reloaded:") {
		t.Errorf("kilnd --reload of a good folder: %v, %q, %q; want exit 0 and what changed", err, out, stderr)
	}
}
