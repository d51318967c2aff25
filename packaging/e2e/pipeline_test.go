package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The two pipeline checks of TestSystemd run once the parts they drive exist:
// the example images (`make images`) and the CLI's images import, datasets,
// runs, models and predict. Until then they skip and name what is missing (even
// under KILN_REQUIRE_REAL=1: the feature is absent, not the machine).

type prereqs struct {
	missing string   // "" when everything is there
	images  []string // the example images' OCI archives, to stage
}

func leadPrereqs(repo string) prereqs {
	var p prereqs
	var missing []string
	for _, f := range []string{"tabular-trainer.tar", "tabular-server.tar"} {
		path := filepath.Join(repo, "bin/images", f)
		if _, err := os.Stat(path); err != nil {
			missing = append(missing, "bin/images/"+f+" (make images)")
			continue
		}
		p.images = append(p.images, path)
	}
	if _, err := os.Stat(filepath.Join(repo, "examples/tabular/data/breast_cancer.csv")); err != nil {
		missing = append(missing, "examples/tabular/data/breast_cancer.csv")
	}
	p.missing = strings.Join(missing, ", ")
	if p.missing == "" {
		p.images = append(p.images, filepath.Join(repo, "examples/tabular/data/breast_cancer.csv"))
	}
	return p
}

// need skips t, or fails it under KILN_REQUIRE_REAL=1, when the example
// images or data the full-loop steps use are missing.
func (p prereqs) need(t *testing.T) {
	t.Helper()
	if p.missing != "" {
		requireReal(t, "needs "+p.missing)
	}
}

// tabSpec trains the example trainer on the breast cancer data (label
// diagnosis, last column) and serves it with the example server.
const tabSpec = `data:
  format: csv
  label: diagnosis
  settle: 0s
train:
  image: kiln.local/tabular-trainer:1
  hyperparameters: {label: diagnosis}
  timeout: 5m
serve:
  image: kiln.local/tabular-server:1
evaluate:
  gate: {min: 0.5}
triggers:
  new_data: {debounce: 1s, min_rows: 1}
`

type apiModel struct {
	ID    string `json:"id"`
	State string `json:"state"`
}

func trainAndServe(t *testing.T, ctx context.Context, m *machine) {
	m.must(ctx, "kiln images import /opt/tabular-trainer.tar && kiln images import /opt/tabular-server.tar")
	m.must(ctx, "cat >/etc/kiln/pipelines/tab.yaml <<'EOF'\n"+tabSpec+"EOF\nkiln pipelines reload")
	// Rename into place (settle: 0s); the features of five rows for predict.
	m.must(ctx, `mkdir -p /var/lib/kiln/drop/tab && cp /opt/breast_cancer.csv /var/lib/kiln/drop/tab/.b.csv.tmp &&
mv /var/lib/kiln/drop/tab/.b.csv.tmp /var/lib/kiln/drop/tab/b.csv &&
sed 1d /opt/breast_cancer.csv | head -n 5 | cut -d, -f1-30 >/opt/rows.csv`)
	m.must(ctx, "kiln models list -p tab -o json && kiln runs list -p tab -o json") // the commands work at all
	var models []apiModel
	err := eventually(ctx, 120*time.Second, time.Second, func() error {
		out, err := m.sh(ctx, "kiln models list -p tab -o json")
		if err != nil {
			return fmt.Errorf("kiln models: %v: %s", err, out)
		}
		if err := json.Unmarshal([]byte(out), &models); err != nil {
			return fmt.Errorf("kiln models list -o json: %v: %s", err, out)
		}
		for _, mo := range models {
			if mo.State == "live" {
				return nil
			}
		}
		runs, _ := m.sh(ctx, "kiln runs list -p tab; kiln datasets list -p tab 2>&1 | tail -n 3")
		return fmt.Errorf("no live model yet: models %+v; runs:\n%s", models, runs)
	})
	if err != nil {
		t.Fatal(err)
	}
	out := m.must(ctx, "kiln predict tab </opt/rows.csv")
	if n := len(strings.Fields(out)); n != 5 {
		t.Fatalf("kiln predict tab answered %d predictions for 5 rows:\n%s", n, out)
	}
}

func restartKeepsServing(t *testing.T, ctx context.Context, m *machine) {
	tasks := m.must(ctx, "ctr -n kiln tasks ls | sort")
	if !strings.Contains(tasks, "RUNNING") {
		t.Fatalf("no running serving container:\n%s", tasks)
	}
	pid := m.show(ctx, "kilnd.service", "MainPID")["MainPID"]
	rows := m.must(ctx, "cat /opt/rows.csv")
	// Predictions keep coming to the endpoint while kilnd restarts: its
	// listener waits in systemd's fd store, so clients queue, not fail. The
	// host reaches the socket through the machine's root (/proc/PID/root).
	sock := fmt.Sprintf("/proc/%d/root/run/kiln/serve/tab.sock", m.initPID)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}}
	predict := func() error {
		resp, err := client.Post("http://endpoint/invocations", "text/csv", strings.NewReader(rows))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || len(strings.Fields(string(b))) != 5 {
			return fmt.Errorf("%s: %q", resp.Status, b)
		}
		return nil
	}
	if err := predict(); err != nil {
		t.Fatalf("endpoint %s before the restart: %v", sock, err)
	}
	stop := make(chan struct{})
	type result struct {
		ok   int
		errs []error
	}
	done := make(chan result)
	go func() {
		var r result
		for {
			select {
			case <-stop:
				done <- r
				return
			default:
			}
			if err := predict(); err != nil {
				r.errs = append(r.errs, err)
			} else {
				r.ok++
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	time.Sleep(500 * time.Millisecond)
	m.must(ctx, "systemctl restart kilnd")
	time.Sleep(time.Second)
	close(stop)
	r := <-done
	t.Logf("%d predictions answered across the restart", r.ok)
	if len(r.errs) > 0 {
		t.Errorf("%d predictions failed across the restart, first: %v", len(r.errs), r.errs[0])
	}
	if after := m.must(ctx, "ctr -n kiln tasks ls | sort"); after != tasks {
		t.Errorf("containers changed across the restart:\nbefore:\n%s\nafter:\n%s", tasks, after)
	}
	if s := m.show(ctx, "kilnd.service", "MainPID", "ActiveState"); s["MainPID"] == pid || s["ActiveState"] != "active" {
		t.Errorf("kilnd %v after restart (MainPID before %s)", s, pid)
	}
	if j := m.must(ctx, "journalctl -u kilnd -o cat --no-pager"); !strings.Contains(j, "taken back from systemd") {
		t.Errorf("kilnd did not take the endpoint listener back from the fd store:\n%s", lastLines(j, 20))
	}
	// kiln predict goes through the API, which answers once kilnd has
	// restored the endpoints.
	err := eventually(ctx, 10*time.Second, 200*time.Millisecond, func() error {
		if out, err := m.sh(ctx, "kiln predict tab </opt/rows.csv"); err != nil || len(strings.Fields(out)) != 5 {
			return fmt.Errorf("kiln predict after the restart: %v: %s", err, out)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}
