package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCLIErrorsSayWhatToDo runs the kiln binary against a real kilnd (and
// against no kilnd) on the mistakes people make: each is exit 1 and one
// line on stderr that names what to do next.
func TestCLIErrorsSayWhatToDo(t *testing.T) {
	root := newRoot(t, "containerd: {address: /nonexistent.sock}\n")
	writeFile(t, filepath.Join(root, "etc/kiln/pipelines/cancer.yaml"), strings.Replace(ingestOnlySpec, "SETTLE", "0s", 1))
	k := startKilnd(t, root)
	k.expect("READY=1")
	stale := filepath.Join(t.TempDir(), "stale.sock")
	l, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	_ = l.Close()
	for _, tc := range []struct {
		args []string
		want []string // all in the one line
	}{
		{[]string{"--socket", filepath.Join(root, "none.sock"), "status"}, []string{"kilnd is not running", "systemctl start kilnd"}},
		{[]string{"--socket", stale, "status"}, []string{"kilnd is not running", "systemctl"}},
		{[]string{"pipelines", "show", "nope"}, []string{`no pipeline "nope"`, "kiln pipelines"}},
		{[]string{"predict", "nope"}, []string{`"nope"`, "kiln pipelines"}},
		{[]string{"rollback", "nope"}, []string{"nope", "kiln pipelines"}},
		{[]string{"runs", "start", "nope"}, []string{"nope", "kiln pipelines"}},
		{[]string{"models", "accuracy", "nope"}, []string{"nope", "kiln pipelines"}},
		{[]string{"models", "show", "cancer/m9"}, []string{"cancer/m9", "kiln models"}},
		{[]string{"promote", "cancer/m9"}, []string{"cancer/m9", "kiln models"}},
		{[]string{"pin", "cancer", "cancer/m9"}, []string{"cancer/m9", "kiln models"}},
		{[]string{"models", "show", "m9"}, []string{"m9", "pipeline/m7"}},
		{[]string{"runs", "show", "cancer/r9"}, []string{"cancer/r9", "kiln runs"}},
		{[]string{"logs", "cancer/r9"}, []string{"cancer/r9", "kiln runs"}},
		{[]string{"datasets", "show", "cancer/d9"}, []string{"cancer/d9", "kiln datasets"}},
		{[]string{"lineage", "cancer/m9"}, []string{"cancer/m9", "kiln "}},
		{[]string{"gpu", "cordon", "7"}, []string{"7", "kiln gpu"}},
	} {
		cmd := exec.Command(filepath.Join(binDir, "kiln"), append([]string{"--socket", k.socket()}, tc.args...)...)
		cmd.Stdin = strings.NewReader("1,2\n") // for predict
		var stderr strings.Builder
		cmd.Stderr = &stderr
		err := cmd.Run()
		line := strings.TrimSuffix(stderr.String(), "\n")
		bad := err == nil || strings.Contains(line, "\n") || !strings.HasPrefix(line, "kiln: ")
		for _, w := range tc.want {
			bad = bad || !strings.Contains(line, w)
		}
		if bad {
			t.Errorf("kiln %s: %v, stderr %q; want one line with %q", strings.Join(tc.args, " "), err, stderr.String(), tc.want)
		}
	}
	_ = os.Remove(stale)
}
