package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kiln-edge/kiln/daemon/api"
)

// uiPage is a dashboard page the demo opens, and what its HTML must show.
type uiPage struct {
	name, path string
	wants      []string
}

// uiPages are the pages of the dashboard that tell this demo's story: the
// live model on the overview, the rollback and the retraining on the
// pipeline's timeline, the live model's lineage back to its run, and the
// retraining (and the rollback, when it is among the newest the page
// lists) on the events page. All checked in the HTML kilnd serves, which
// works without JavaScript.
func (d *demo) uiPages(evs []api.Event) []uiPage {
	live := d.rep.Live
	events := []string{`>` + d.rep.Retrain + `</a>`}
	var head, rollback uint64
	for _, e := range evs {
		head = max(head, e.Seq)
		if e.Kind == "model.rolled_back_to" {
			rollback = e.Seq
		}
	}
	// The page lists the newest events when it is read, a moment after
	// these: a margin for what arrives in between.
	if head-rollback < uiEventsListed-50 {
		events = append(events, `<td class="kind">model.rolled_back_to</td>`)
	}
	return []uiPage{
		{"overview", "/ui/", []string{`id="kilnd-state">ready<`, `href="/ui/lineage/` + live + `">` + live + `</a>`}},
		{"pipeline", "/ui/pipelines/" + pipeline, []string{`<tr class="model" data-model="` + live + `">`,
			`data-kind="rollback"`, `data-kind="retrain" data-model="` + d.rep.Retrain + `"`}},
		{"lineage", "/ui/lineage/" + live, []string{`<span id="root">` + live + `</span>`, `data-id="` + pipeline + `/r`}},
		{"events", "/ui/events", events},
	}
}

// uiEventsListed is how many of the newest events the events page lists
// (daemon/ui's pageEvents).
const uiEventsListed = 200

// dashboard runs `kiln ui` on the box, reads each page through its link
// as a browser would (a cookie jar), checks what the pages show and, with
// Debian's chromium at hand, saves a screenshot of each under -out.
func (d *demo) dashboard(ctx context.Context, evs []api.Event) error {
	t0 := time.Now()
	pages := d.uiPages(evs)
	ui, err := startKilnUI(d.b, "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ui.stop()
	jar, err := cookiejar.New(nil)
	if err != nil {
		return err
	}
	hc := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	base := strings.TrimSuffix(ui.url[:strings.Index(ui.url, "?")], "/ui/")
	for i, p := range pages {
		u := base + p.path
		if i == 0 {
			u = ui.url // the token, exchanged for the cookie
		}
		body, err := get(ctx, hc, u)
		if err != nil {
			return fmt.Errorf("dashboard %s: %w", p.path, err)
		}
		for _, w := range p.wants {
			if !strings.Contains(body, w) {
				return fmt.Errorf("dashboard %s lacks %s", p.path, w)
			}
		}
		d.rep.UIPages = append(d.rep.UIPages, p.name)
	}

	chromium, err := exec.LookPath("chromium")
	if err != nil {
		d.say("the dashboard on this state: %d pages checked; no screenshots (chromium is not installed: make deps)", len(pages))
		return nil
	}
	shots, err := d.screenshots(ctx, chromium, pages)
	if err != nil {
		return err
	}
	d.rep.UIShots = shots
	d.say("the dashboard on this state (kiln ui, %d pages checked and screenshotted in %.1fs):", len(pages), time.Since(t0).Seconds())
	for _, s := range shots {
		d.say("  %s", s)
	}
	return nil
}

func get(ctx context.Context, hc *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }() // read side
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return string(b), nil
}

// screenshots opens each page in headless chromium, all at once, each
// through a `kiln ui` of its own (its link works once, and a fresh profile
// has no cookie), and returns the PNGs' paths, in the pages' order.
func (d *demo) screenshots(ctx context.Context, chromium string, pages []uiPage) ([]string, error) {
	if err := os.MkdirAll(d.b.opt.out, 0o755); err != nil {
		return nil, err
	}
	out, err := filepath.Abs(d.b.opt.out)
	if err != nil {
		return nil, err
	}
	shots := make([]string, len(pages))
	errs := make([]error, len(pages))
	var wg sync.WaitGroup
	for i, p := range pages {
		shots[i] = filepath.Join(out, "ui-"+p.name+".png")
		ui, err := startKilnUI(d.b, "127.0.0.1:0")
		if err != nil {
			errs[i] = err
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer ui.stop()
			errs[i] = shoot(ctx, chromium, strings.Replace(ui.url, "/ui/?token=", p.path+"?token=", 1), shots[i], p.wants)
		}()
	}
	wg.Wait()
	return shots, errors.Join(errs...)
}

// shoot saves a screenshot of link, in a throwaway chromium profile, and
// checks that the page chromium drew shows what it should.
func shoot(ctx context.Context, chromium, link, shot string, wants []string) error {
	profile, err := os.MkdirTemp("", "kdemo-chromium")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(profile) }()
	_ = os.Remove(shot)
	ctx, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--hide-scrollbars", "--disable-extensions", "--disable-background-networking", "--disable-component-update",
		"--disable-sync", "--disable-default-apps", "--mute-audio", "--window-size=1280,1600",
		"--user-data-dir="+profile, "--screenshot="+shot, "--dump-dom", link)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	dom, err := cmd.Output()
	switch {
	case err != nil:
		return fmt.Errorf("chromium %s: %v: %s", shot, err, lastLine(stderr.String()))
	case strings.Contains(string(dom), "kiln ui: "):
		return fmt.Errorf("kiln ui refused chromium for %s: %s", shot, lastLine(string(dom)))
	}
	for _, w := range wants {
		if !strings.Contains(string(dom), w) {
			return fmt.Errorf("chromium's page for %s lacks %s", shot, w)
		}
	}
	if fi, err := os.Stat(shot); err != nil || fi.Size() < 10<<10 {
		return fmt.Errorf("screenshot %s: %v (%v); want a picture of the page", shot, err, fi)
	}
	return nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// kilnUI is a running `kiln ui`, as the operator would start it: the CLI
// with the box's socket in KILN_API_SOCKET.
type kilnUI struct {
	cmd  *exec.Cmd
	url  string
	done chan struct{}
}

// startKilnUI starts `kiln ui --listen listen -o json` and reads its link.
// It runs in a process group of its own: a Ctrl-C at the terminal is the
// demo's to handle (stop it, then clean up), not the forwarder's.
func startKilnUI(b *box, listen string) (*kilnUI, error) {
	cmd := exec.Command(filepath.Join(b.opt.bin, "kiln"), "ui", "--listen", listen, "-o", "json")
	cmd.Env = append(os.Environ(), "KILN_API_SOCKET="+b.sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ui := &kilnUI{cmd: cmd, done: make(chan struct{})}
	var got struct {
		URL string `json:"url"`
	}
	if err := json.NewDecoder(stdout).Decode(&got); err != nil || got.URL == "" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("kiln ui --listen %s printed no link (%v): %s", listen, err, strings.TrimSpace(stderr.String()))
	}
	ui.url = got.URL
	go func() { _ = cmd.Wait(); close(ui.done) }()
	return ui, nil
}

// stop interrupts kiln ui, as Ctrl-C would, and waits for it to exit.
func (ui *kilnUI) stop() {
	_ = ui.cmd.Process.Signal(os.Interrupt)
	select {
	case <-ui.done:
	case <-time.After(5 * time.Second):
		_ = ui.cmd.Process.Kill()
		<-ui.done
	}
}

// holdUI is -ui: the dashboard stays up on a known port, with kilnd, until
// SIGINT or SIGTERM; then the box is cleaned up as always.
func holdUI(ctx context.Context, b *box, out io.Writer) error {
	ui, err := startKilnUI(b, "127.0.0.1:8400")
	if err != nil {
		return err
	}
	defer ui.stop()
	fmt.Fprintf(out, "\nkilnd keeps running with the dashboard (kiln ui, loopback only); open this link once (from a laptop: ssh -L 8400:127.0.0.1:8400 BOX):\n  %s\nCtrl-C to stop and clean up.\n", ui.url)
	select {
	case <-ctx.Done():
		return nil
	case <-ui.done:
		return fmt.Errorf("kiln ui exited (%v)", ui.cmd.ProcessState)
	}
}
