package main

import (
	"io"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
)

// TestCommandLinesParse keeps the command lines the README and DESIGN show
// parseable: a default subcommand with flags (kiln models -p P) needs
// kong's "withargs", which is easy to forget.
func TestCommandLinesParse(t *testing.T) {
	for _, args := range [][]string{
		{"status"}, {"version"}, {"doctor"}, {"backup", "/tmp/x.db"},
		{"pipelines"}, {"pipelines", "show", "p"}, {"pipelines", "validate", "f.yaml"}, {"pipelines", "reload"},
		{"datasets"}, {"datasets", "-p", "p"}, {"datasets", "show", "p/d1"}, {"datasets", "release", "p/d1"},
		{"runs"}, {"runs", "-p", "p"}, {"runs", "show", "p/r1"}, {"runs", "cancel", "p/r1"}, {"runs", "start", "p"},
		{"logs", "p/r1"}, {"logs", "p/r1", "-f"},
		{"models"}, {"models", "-p", "p"}, {"models", "show", "p/m1"},
		{"promote", "p/m1"}, {"promote", "p/m1", "--force"}, {"rollback", "p"}, {"rollback", "p", "--to", "p/m1"},
		{"pin", "p", "p/m1"}, {"unpin", "p"},
		{"lineage", "p/m1"}, {"lineage", "p/m1", "--up"}, {"lineage", "p/d1", "--down", "--dot"},
		{"events"}, {"events", "-f", "--since", "10"},
		{"gpu"}, {"gpu", "-o", "json"}, {"gpu", "cordon", "0"}, {"gpu", "uncordon", "0"},
		{"images", "import", "parse_test.go"}, {"images", "ls"},
		{"predict", "p"}, {"gc", "--dry-run"}, {"gc", "--images"},
		{"-o", "json", "models", "-p", "p"},
		{"models", "accuracy", "p"}, {"models", "accuracy", "p", "--csv"}, {"-o", "json", "models", "accuracy", "p"},
		{"models", "accuracy", "p", "--svg", "/tmp/p.svg"},
		{"feedback", "p"}, {"feedback", "p", "labels.csv"}, {"feedback", "p", "-"},
	} {
		var c cli
		k, err := kong.New(&c, kong.Vars{"default_socket": "/run/kiln/kiln.sock"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := k.Parse(args); err != nil {
			t.Errorf("kiln %v: %v", args, err)
		}
	}
}

// TestUsageErrorsOneLine: a command-line mistake is one line naming it and
// where help is, with kong's usage status (80), not the whole usage.
func TestUsageErrorsOneLine(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"lineage", "p/m1", "--up", "--down"}, "kiln: --up and --down can't be used together (see kiln lineage --help)\n"},
		{[]string{"lineage"}, "kiln: expected \"<id>\" (see kiln lineage --help)\n"},
		{[]string{"no-such-command"}, "kiln: unexpected argument no-such-command (see kiln --help)\n"},
	} {
		var c cli
		var stderr strings.Builder
		kctx, code := parse(&c, tc.args, &stderr)
		if kctx != nil || code != 80 || stderr.String() != tc.want {
			t.Errorf("kiln %v: exit %d, stderr %q; want 80 and %q", tc.args, code, stderr.String(), tc.want)
		}
	}
	var c cli
	if kctx, code := parse(&c, []string{"lineage", "p/m1", "--down"}, io.Discard); kctx == nil || code != 0 || !c.Lineage.Down {
		t.Errorf("kiln lineage p/m1 --down: exit %d; want parsed", code)
	}
}
