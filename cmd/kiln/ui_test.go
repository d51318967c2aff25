package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// upstream is a kilnd stand-in on a real unix socket: it answers every
// request with its path and whether a Cookie header reached it.
func upstream(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "kui")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "kilnd "+r.URL.RequestURI()+" cookie="+r.Header.Get("Cookie"))
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return sock
}

// TestUIForwarder: the forwarded port answers only the browser that opened
// the one-time link: no token and no cookie, a used token, a wrong token, a
// foreign Host header (DNS rebinding), a write method and a path outside
// /ui/ are refused; the cookie is HttpOnly and SameSite=Strict and never
// reaches kilnd.
func TestUIForwarder(t *testing.T) {
	ln, err := listenLoopback("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := newUIForwarder(upstream(t), ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if err := f.probe(context.Background()); err != nil {
		t.Fatalf("probe: %v", err)
	}
	srv := &http.Server{Handler: f}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	base := "http://" + ln.Addr().String()
	hc := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(method, url, host, cookie string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(method, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if host != "" {
			req.Host = host
		}
		if cookie != "" {
			req.Header.Set("Cookie", cookie)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}

	if resp, body := do("GET", base+"/ui/", "", ""); resp.StatusCode != 403 || !strings.Contains(body, "open the link") {
		t.Errorf("no token, no cookie: %s %q; want 403", resp.Status, body)
	}
	if resp, _ := do("GET", base+"/ui/?token=wrong", "", ""); resp.StatusCode != 403 {
		t.Errorf("wrong token: %s; want 403", resp.Status)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	rebound := "attacker.example:" + strings.TrimPrefix(ln.Addr().String(), "127.0.0.1:")
	if resp, body := do("GET", f.link(), rebound, ""); resp.StatusCode != 403 || !strings.Contains(body, "only requests addressed to") {
		t.Errorf("token with Host %s: %s %q; want 403 (DNS rebinding)", rebound, resp.Status, body)
	}
	if f.used {
		t.Fatal("a refused request spent the token")
	}

	// The link, once: a cookie and a redirect to the page without the token.
	resp, _ := do("GET", strings.Replace(f.link(), "/ui/?", "/ui/pipelines/p?", 1), "", "")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/pipelines/p" {
		t.Fatalf("token exchange: %s to %q; want 303 to /ui/pipelines/p", resp.Status, resp.Header.Get("Location"))
	}
	cookies := resp.Cookies()
	if len(cookies) != 1 {
		t.Fatalf("token exchange set %d cookies; want 1", len(cookies))
	}
	c := cookies[0]
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.Name != "kiln_ui_"+strconv.Itoa(port) {
		t.Errorf("cookie %+v; want kiln_ui_%d, HttpOnly, SameSite=Strict, Path=/", c, port)
	}
	if resp, body := do("GET", f.link(), "", ""); resp.StatusCode != 403 || !strings.Contains(body, "used already") {
		t.Errorf("reused token: %s %q; want 403", resp.Status, body)
	}
	session := c.Name + "=" + c.Value
	if resp, body := do("GET", base+"/ui/events?x=1", "", session); resp.StatusCode != 200 || body != "kilnd /ui/events?x=1 cookie=" {
		t.Errorf("with the cookie: %s %q; want kilnd's answer, no cookie forwarded", resp.Status, body)
	}
	if resp, _ := do("GET", base+"/ui/", "", c.Name+"=forged"); resp.StatusCode != 403 {
		t.Errorf("forged cookie: %s; want 403", resp.Status)
	}
	if resp, _ := do("GET", base+"/ui/", "localhost:"+strconv.Itoa(port), session); resp.StatusCode != 403 {
		t.Errorf("cookie with Host localhost: %s; want 403 (only the printed address)", resp.Status)
	}
	if resp, _ := do("POST", base+"/ui/", "", session); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %s; want 405 (read-only)", resp.Status)
	}
	if resp, body := do("GET", base+"/v1/status", "", session); resp.StatusCode != 404 || strings.HasPrefix(body, "kilnd ") {
		t.Errorf("/v1/status through the forwarder: %s %q; want 404, not forwarded", resp.Status, body)
	}
}

// TestUIListensOnLoopbackOnly: --listen refuses any address that is not a
// loopback IP.
func TestUIListensOnLoopbackOnly(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.1:0", "localhost:0", "nonsense"} {
		if ln, err := listenLoopback(addr); err == nil {
			ln.Close()
			t.Errorf("--listen %s accepted; want refused", addr)
		}
	}
	for _, addr := range []string{"127.0.0.1:0", "127.0.0.2:0"} {
		ln, err := listenLoopback(addr)
		if err != nil {
			t.Errorf("--listen %s: %v", addr, err)
			continue
		}
		ln.Close()
	}
}
