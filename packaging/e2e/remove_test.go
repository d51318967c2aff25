package e2e

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// kilnLabelled lists the containers of kiln's namespace labelled with kind
// ("serve", "train"), or every kiln-labelled one when kind is "".
func kilnLabelled(t *testing.T, ctx context.Context, m *machine, kind string) []string {
	t.Helper()
	filter := `labels."io.kiln.kind"`
	if kind != "" {
		filter += "==" + kind
	}
	return strings.Fields(m.must(ctx, "ctr -n kiln containers ls -q '"+filter+"' 2>/dev/null"))
}

// removeKiln runs dpkg -r kiln and checks what prerm promises: kilnd and its
// socket stopped, kiln's serving and training containers stopped and deleted
// (wantServing: at least one serving container ran before, so the check
// cannot pass on an idle box), /run/kiln and its dead sockets gone, the state
// kept, and each of these said. It returns what dpkg printed.
func removeKiln(t *testing.T, ctx context.Context, m *machine, wantServing bool) string {
	t.Helper()
	serve, train := kilnLabelled(t, ctx, m, "serve"), kilnLabelled(t, ctx, m, "train")
	if wantServing && len(serve) == 0 {
		t.Fatalf("no serving container before dpkg -r; containers: %s", m.must(ctx, "ctr -n kiln containers ls"))
	}
	if _, err := m.sh(ctx, "test -S /run/kiln/kiln.sock"); err != nil {
		t.Fatalf("no API socket before dpkg -r: %v", err)
	}
	start := time.Now()
	out := m.must(ctx, "dpkg -r kiln")
	t.Logf("dpkg -r took %.1fs and said:\n%s", time.Since(start).Seconds(), strings.TrimSpace(out))
	if len(serve)+len(train) > 0 {
		want := fmt.Sprintf("kiln remove: stopped and deleted %d serving and %d training container(s)", len(serve), len(train))
		if !strings.Contains(out, want) {
			t.Errorf("dpkg -r did not say %q", want)
		}
	}
	if left := kilnLabelled(t, ctx, m, ""); len(left) > 0 {
		t.Errorf("kiln's containers left after dpkg -r: %v\n%s", left, m.must(ctx, "ctr -n kiln tasks ls"))
	}
	if out, err := m.sh(ctx, "ls -la /run/kiln 2>&1"); err == nil {
		t.Errorf("/run/kiln (API and endpoint sockets, dead without kilnd) left after dpkg -r:\n%s", out)
	}
	for _, want := range []string{"kiln remove: removed /run/kiln", "kiln remove: kept /var/lib/kiln", "until 'dpkg --purge kiln'"} {
		if !strings.Contains(out, want) {
			t.Errorf("dpkg -r did not say %q", want)
		}
	}
	if _, err := m.sh(ctx, "test -s /var/lib/kiln/kiln.db"); err != nil {
		t.Errorf("dpkg -r removed /var/lib/kiln/kiln.db; remove must keep the state")
	}
	for _, u := range []string{"kilnd.service", "kilnd.socket"} {
		if s := m.show(ctx, u, "ActiveState")["ActiveState"]; s == "active" {
			t.Errorf("%s still %s after dpkg -r", u, s)
		}
	}
	return out
}

// removeReinstall removes kiln while the quick start's cancer model serves,
// then installs the same package again: kilnd starts the live model's server
// again from the kept state and the endpoint answers the same user.
func removeReinstall(t *testing.T, ctx context.Context, m *machine) {
	removeKiln(t, ctx, m, true)
	start := time.Now()
	m.must(ctx, "dpkg -i /opt/b/*/packages/kiln_*_"+runtime.GOARCH+".deb")
	predict := "runuser -l " + quickstartUser + " -c 'kiln predict cancer <rows.csv'"
	err := eventually(ctx, 60*time.Second, 500*time.Millisecond, func() error {
		out, err := m.sh(ctx, predict)
		if n := len(strings.Fields(out)); err != nil || n != 5 {
			return fmt.Errorf("kiln predict cancer after the reinstall: %v (%d answers):\n%s", err, n, lastLines(out, 5))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("reinstall -> the endpoint answers again: %.1fs", time.Since(start).Seconds())
	if out := m.must(ctx, "kiln models -p cancer"); !strings.Contains(out, "live") {
		t.Errorf("after the reinstall no model is live:\n%s", out)
	}
}
