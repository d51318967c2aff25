package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/daemon/api"
)

// kilnUI runs `kiln ui` against k as cred (nil: as the test) and returns the
// one-time link it printed; the process is stopped when the test ends. A
// `kiln ui` that kilnd refuses exits at once: its stderr comes back as err.
func (k *kilnd) kilnUI(t *testing.T, cred *syscall.Credential) (string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "kiln"), "--socket", k.socket(), "ui", "-o", "json")
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Signal(os.Interrupt); _ = cmd.Wait() })
	var got struct {
		URL string `json:"url"`
	}
	if err := json.NewDecoder(out).Decode(&got); err != nil {
		_ = cmd.Wait()
		return "", fmt.Errorf("kiln ui printed no link (%v): %s", err, stderr.String())
	}
	if got.URL == "" {
		t.Fatalf("kiln ui -o json printed no url")
	}
	return got.URL, nil
}

// browserClient follows the one-time link like a browser: a cookie jar,
// redirects followed.
func browserClient(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 30 * time.Second}
}

func getBody(t *testing.T, hc *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestUIAuthorization: the dashboard is a read route of the socket: a uid
// in neither kiln group is refused (403 on /ui/, which kiln ui reports with
// kilnd's reason and prints no link); a reader gets the pages through its
// own kiln ui, and a second use of the link is refused.
func TestUIAuthorization(t *testing.T) {
	needRoot(t)
	readGroup, adminGroup := "kilnur", "kilnua"
	readGID := addGroup(t, readGroup)
	addGroup(t, adminGroup)
	root := newRoot(t, fmt.Sprintf("containerd: {address: /nonexistent.sock}\ngroups: {read: %s, admin: %s}\n", readGroup, adminGroup))
	k := startKilnd(t, root)
	k.expect("READY=1")
	const nobodyGID = 65534
	stranger := &syscall.Credential{Uid: 64113, Gid: nobodyGID}
	reader := &syscall.Credential{Uid: 64111, Gid: nobodyGID, Groups: []uint32{readGID}}

	_, err := k.kilnUI(t, stranger)
	if err == nil || !strings.Contains(err.Error(), "403 Forbidden") || !strings.Contains(err.Error(), `neither group "kilnur" nor "kilnua"`) {
		t.Errorf("kiln ui as a uid outside the groups: %v; want kilnd's 403 on /ui/", err)
	}

	link, err := k.kilnUI(t, reader)
	if err != nil {
		t.Fatalf("kiln ui as a reader: %v", err)
	}
	hc := browserClient(t)
	status, body := getBody(t, hc, link)
	if status != 200 || !strings.Contains(body, `id="kilnd-state">ready<`) {
		t.Fatalf("reader's overview: %d\n%s", status, body)
	}
	if status, _ := getBody(t, &http.Client{Timeout: 5 * time.Second}, link); status != 403 {
		t.Errorf("the link a second time, from a fresh client: %d; want 403", status)
	}
}

// uiShots is where the browser test leaves its screenshots: under
// $KILN_TEST_ARTIFACTS when CI sets it, else in the temp folder. Kept.
func uiShots(t *testing.T) string {
	base := os.Getenv("KILN_TEST_ARTIFACTS")
	if base == "" {
		base = os.TempDir()
	}
	dir := filepath.Join(base, "kiln-ui-screens")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// browse opens each page through its own kiln ui (a link works once) in
// headless chromium, all at once, saves a screenshot of each as NAME.png
// and returns the DOMs after the scripts ran, by name.
func browse(t *testing.T, k *kilnd, chromium, shots string, pages map[string]string) map[string]string {
	t.Helper()
	type result struct {
		name, dom string
		err       error
	}
	results := make(chan result, len(pages))
	for name, path := range pages {
		link, err := k.kilnUI(t, nil)
		if err != nil {
			t.Fatal(err)
		}
		link = strings.Replace(link, "/ui/?token=", path+"?token=", 1)
		profile := t.TempDir()
		go func() {
			shot := filepath.Join(shots, name+".png")
			_ = os.Remove(shot)
			ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
				"--hide-scrollbars", "--disable-extensions", "--disable-background-networking", "--disable-component-update",
				"--disable-sync", "--disable-default-apps", "--mute-audio", "--window-size=1280,1500", "--user-data-dir="+profile, "--screenshot="+shot, "--dump-dom", link)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			dom, err := cmd.Output()
			switch {
			case err != nil:
				err = fmt.Errorf("chromium %s: %v\n%s", path, err, stderr.String())
			case strings.Contains(string(dom), "kiln ui: "):
				err = fmt.Errorf("kiln ui refused the browser on %s:\n%s", path, dom)
			default:
				if fi, serr := os.Stat(shot); serr != nil || fi.Size() < 10<<10 {
					err = fmt.Errorf("screenshot %s: %v (%v); want a picture of the page", shot, serr, fi)
				}
			}
			results <- result{name, string(dom), err}
		}()
	}
	doms := map[string]string{}
	for range pages {
		r := <-results
		if r.err != nil {
			t.Error(r.err)
		}
		doms[r.name] = r.dom
	}
	if t.Failed() {
		t.FailNow()
	}
	return doms
}

func mustContain(t *testing.T, page, dom string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(dom, w) {
			t.Errorf("%s lacks %q", page, w)
		}
	}
}

// TestUIInBrowser loads every page in Debian's headless chromium, through
// kiln ui, against a kilnd whose pipeline trained, went live and was scored
// on labelled feedback, with one batch in quarantine; it checks the DOM
// against the API's own answers and keeps a screenshot of each page.
func TestUIInBrowser(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		needReal(t, "chromium is not installed (make deps installs Debian's)")
	}
	k, root := startLoop(t, "kiln-test-ui", monitorSpec)
	t0 := time.Now()
	data := loadCancer(t)
	waitLong(t, 3*time.Minute, "m1 live", func() bool { return modelsOf(t, k)["cancer/m1"].State == "live" })
	t.Logf("m1 live after %s", time.Since(t0).Round(time.Millisecond))

	// Two labelled feedback versions (two points on the timeline), rows no
	// model trained on, a quarter of the labels wrong.
	for i, span := range [][2]int{{100, 160}, {160, 220}} {
		var rows [][]string
		for j := span[0]; j < span[1]; j++ {
			l := data.labels[j]
			if j%4 == 0 {
				l = other(l)
			}
			rows = append(rows, append(perturbed(data.rows[j]), l))
		}
		v := dropFeedback(t, k, root, "fb"+strconv.Itoa(i)+".csv", csvText(append(slices.Clone(data.header), "diagnosis"), rows))
		waitScored(t, k, v.ID)
	}
	// A batch with the wrong columns waits in quarantine.
	drop := filepath.Join(root, "var/lib/kiln/drop/cancer")
	writeFile(t, filepath.Join(drop, ".bad.part"), "colour,size\nred,1\n")
	if err := os.Rename(filepath.Join(drop, ".bad.part"), filepath.Join(drop, "bad.csv")); err != nil {
		t.Fatal(err)
	}
	var bad api.Dataset
	waitLong(t, time.Minute, "bad.csv quarantined", func() bool {
		for _, d := range datasetsOf(t, k) {
			if d.State == "quarantined" && d.Kind == "data" {
				bad = d
				return true
			}
		}
		return false
	})
	t.Logf("scored and quarantined after %s", time.Since(t0).Round(time.Millisecond))

	ctx := context.Background()
	acc, err := k.client().Accuracy(ctx, "cancer")
	if err != nil {
		t.Fatal(err)
	}
	st, err := k.client().Status(ctx)
	if err != nil || len(st.Monitor) != 1 || st.Monitor[0].Value == nil {
		t.Fatalf("status monitor = %+v, %v; want cancer's live metric", st.Monitor, err)
	}
	m1 := modelsOf(t, k)["cancer/m1"]
	shots := uiShots(t)
	t1 := time.Now()

	doms := browse(t, k, chromium, shots, map[string]string{"overview": "/ui/", "pipeline": "/ui/pipelines/cancer",
		"lineage": "/ui/lineage/cancer/m1", "events": "/ui/events", "log": "/ui/runs/cancer/r1/log"})
	t.Logf("5 pages in chromium in %s; screenshots in %s", time.Since(t1).Round(time.Millisecond), shots)

	dom := doms["overview"]
	mustContain(t, "overview", dom, `id="kilnd-state">ready<`, `id="pipeline-cancer"`,
		`<a href="/ui/lineage/cancer/m1">cancer/m1</a>`, `holdout `+strconv.FormatFloat(m1.Metrics["accuracy"], 'f', 4, 64),
		`<b class="value">`+strconv.FormatFloat(*st.Monitor[0].Value, 'f', 4, 64)+`</b>`,
		`<a href="/ui/lineage/cancer/r1">cancer/r1</a>`, "1 waiting for a person:", ">"+bad.ID+"</a>", "containerd", "CPU-only")

	dom = doms["pipeline"]
	var want []string
	for _, s := range acc.Models {
		for _, p := range s.Points {
			want = append(want, s.Model+" "+p.Feedback+" "+strconv.FormatFloat(*p.Cumulative, 'f', 4, 64))
		}
	}
	var got []string
	for _, m := range regexp.MustCompile(`<circle class="point" data-model="([^"]+)" data-feedback="([^"]+)" data-value="([^"]+)"`).FindAllStringSubmatch(dom, -1) {
		got = append(got, m[1]+" "+m[2]+" "+m[3])
	}
	if len(want) != 2 || !slices.Equal(got, want) {
		t.Errorf("timeline points in the DOM %q; want the API's %q (two feedback versions)", got, want)
	}
	reason, err := os.ReadFile(filepath.Join(root, "var/lib/kiln/quarantine", bad.ID, "REASON.json"))
	if err != nil {
		t.Fatal(err)
	}
	firstLine, _, _ := strings.Cut(strings.TrimSpace(string(reason)), "\n")
	mustContain(t, "pipeline", dom, `data-kind="promotion" data-model="cancer/m1"`, `data-kind="retrain" data-model="cancer/r1"`,
		`<g class="detector">`, `class="detector-point"`, `<article class="quarantined" data-dataset="`+bad.ID+`"`,
		html.EscapeString(firstLine), `<a href="/ui/runs/cancer/r1/log">log</a>`, `<tr class="model" data-model="cancer/m1">`)

	dom = doms["lineage"]
	mustContain(t, "lineage", dom, `<span id="root">cancer/m1</span>`, `data-id="cancer/r1"`, `data-id="`+runsOf(t, k)[0].Datasets[0]+`"`)

	dom = doms["events"]
	// The script ran (under the page's Content-Security-Policy) and opened
	// the live stream; the rows are kilnd's events.
	mustContain(t, "events", dom, "Live: new events appear", `<td class="kind">model.promoted</td>`, `<td class="kind">feedback.scored</td>`)

	dom = doms["log"]
	if m := regexp.MustCompile(`(?s)<pre id="log">(.*?)</pre>`).FindStringSubmatch(dom); m == nil || strings.TrimSpace(m[1]) == "" {
		t.Errorf("log page shows no log:\n%s", dom)
	}

	// The live stream through kiln ui: events from ?since= as SSE.
	link, err := k.kilnUI(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	hc := browserClient(t)
	if status, _ := getBody(t, hc, link); status != 200 {
		t.Fatalf("link: %d", status)
	}
	resp, err := hc.Get(strings.Replace(link[:strings.Index(link, "?")], "/ui/", "/ui/events/stream?since=1", 1))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("stream Content-Type %q", ct)
	}
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended before event 1: %v", err)
		}
		if line == "id: 1\n" {
			break
		}
	}
}
