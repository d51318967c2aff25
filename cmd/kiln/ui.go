package main

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"
)

// uiPrefix is where kilnd serves its dashboard on the API socket (package
// daemon/ui's Prefix; the CLI does not link the pages themselves).
const uiPrefix = "/ui/"

// uiCmd is `kiln ui`: kilnd serves its dashboard on the unix socket only, so
// a browser reaches it through this forwarder, which runs in the operator's
// session and connects to the socket as the operator: kilnd's
// peer-credential check sees the operator's uid and groups, as for any CLI
// command. The forwarder listens on loopback alone and serves nobody but the
// browser that opened the one-time link it printed.
type uiCmd struct {
	Listen string `default:"127.0.0.1:0" placeholder:"ADDR" help:"Loopback address to listen on, 127.0.0.1:PORT or [::1]:PORT (port 0 picks a free one)."`
}

func (uiCmd) Help() string {
	return `Forwards a loopback port to kilnd's read-only dashboard, with your own rights, and prints a link
that works once: opening it gives that browser a session cookie; requests without it, with a used
link, or addressed to another host name are refused. Nothing else is opened on the network. Stop
it with Ctrl-C.

Examples:
  kiln ui
  kiln ui --listen 127.0.0.1:8765     (then, from a laptop: ssh -L 8765:127.0.0.1:8765 BOX)`
}

func (c uiCmd) Run(e *cmdEnv) error {
	ln, err := listenLoopback(c.Listen)
	if err != nil {
		return err
	}
	defer func() { _ = ln.Close() }() // closed by Shutdown already on the normal path
	sock := e.client().Socket()
	f, err := newUIForwarder(sock, ln.Addr().String())
	if err != nil {
		return err
	}
	// Ask once before printing a link: a caller kilnd refuses learns it
	// here, with kilnd's reason, not from a browser tab.
	if err := f.probe(e.ctx); err != nil {
		return err
	}
	if e.json() {
		if err := writeJSON(e.out, map[string]string{"url": f.link(), "listen": ln.Addr().String(), "socket": sock}); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(e.out, "kiln ui: kilnd's dashboard (read-only) from %s on http://%s%s\n", sock, ln.Addr(), uiPrefix)
		fmt.Fprintf(e.out, "open this link once; it gives your browser a session and then stops working:\n%s\n", f.link())
	}
	srv := &http.Server{Handler: f, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return fmt.Errorf("serve on %s: %w", ln.Addr(), err)
	case <-e.ctx.Done():
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx) // the live event streams never end by themselves: cut at the deadline
	return nil
}

// listenLoopback listens on addr, which must name a loopback IP: the
// dashboard carries the operator's rights and must not be reachable from
// the network.
func listenLoopback(addr string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("--listen %q: want 127.0.0.1:PORT or [::1]:PORT: %w", addr, err)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("--listen %q: %q is not a loopback IP address; the dashboard listens on 127.0.0.1 or ::1 only (reach it remotely through ssh -L)", addr, host)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--listen %s: %w", addr, err)
	}
	return ln, nil
}

// uiForwarder admits one browser and forwards its GETs under /ui/ to kilnd.
//
// Caveat: browsers scope cookies by host, not port, so the operator's
// browser also sends this session's cookie to other 127.0.0.1 ports it
// visits. A local server another user runs could collect it that way, and
// only while this kiln ui runs. The cookie is HttpOnly and SameSite=Strict,
// so pages cannot read it or make the browser send it from elsewhere.
type uiForwarder struct {
	host    string // the one Host header accepted: the listener's ip:port
	token   string // in the printed link; exchanged once for the cookie
	session string // the cookie's value
	cookie  string // the cookie's name, per port: two sessions on one box do not clobber each other
	sock    string
	proxy   *httputil.ReverseProxy

	mu   sync.Mutex
	used bool
}

func newUIForwarder(sock, host string) (*uiForwarder, error) {
	token, err := randomToken()
	if err != nil {
		return nil, err
	}
	session, err := randomToken()
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(host) // host is a listener's address
	f := &uiForwarder{host: host, token: token, session: session, cookie: "kiln_ui_" + port, sock: sock}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		MaxIdleConns:    8,
		IdleConnTimeout: 30 * time.Second,
	}
	f.proxy = &httputil.ReverseProxy{
		Transport: tr,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host, pr.Out.Host = "http", "kilnd", "kilnd"
			// kilnd authorises by the socket's peer: the browser's
			// cookie is this forwarder's business alone.
			pr.Out.Header.Del("Cookie")
		},
		FlushInterval: -1, // the events page streams
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			http.Error(w, "kiln ui: cannot reach kilnd at "+sock+": "+err.Error(), http.StatusBadGateway)
		},
	}
	return f, nil
}

func randomToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("kiln ui: random token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// link is the one-time URL to open.
func (f *uiForwarder) link() string {
	return "http://" + f.host + uiPrefix + "?token=" + f.token
}

// probe asks kilnd for the overview as this user would, and returns kilnd's
// refusal (or the socket's error) as a one-line error.
func (f *uiForwarder) probe(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://kilnd"+uiPrefix, nil)
	if err != nil {
		return err
	}
	resp, err := f.proxy.Transport.RoundTrip(req)
	if err != nil {
		return fmt.Errorf("cannot reach kilnd at %s: %w (is kilnd running? --socket or $KILN_API_SOCKET)", f.sock, err)
	}
	defer func() { _ = resp.Body.Close() }() // read side
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var apiErr struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(b, &apiErr) == nil && apiErr.Error != "" {
		return fmt.Errorf("kilnd refused the dashboard (%s): %s", resp.Status, apiErr.Error)
	}
	return fmt.Errorf("kilnd answered the dashboard with %s", resp.Status)
}

func (f *uiForwarder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// DNS rebinding: a page from another site whose name now resolves to
	// 127.0.0.1 sends its own name as Host. Only the address printed counts.
	if r.Host != f.host {
		refuse(w, http.StatusForbidden, "kiln ui answers only requests addressed to "+f.host)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		refuse(w, http.StatusMethodNotAllowed, "the dashboard is read-only; changes go through the kiln CLI")
		return
	}
	if tok := r.URL.Query().Get("token"); tok != "" {
		f.exchange(w, r, tok)
		return
	}
	c, err := r.Cookie(f.cookie)
	if err != nil || subtle.ConstantTimeCompare([]byte(c.Value), []byte(f.session)) != 1 {
		refuse(w, http.StatusForbidden, "open the link kiln ui printed (it works once); run kiln ui again for a new one")
		return
	}
	if r.URL.Path == "/" {
		http.Redirect(w, r, uiPrefix, http.StatusSeeOther)
		return
	}
	if !strings.HasPrefix(r.URL.Path, uiPrefix) {
		refuse(w, http.StatusNotFound, "kiln ui forwards the dashboard under "+uiPrefix+" only")
		return
	}
	f.proxy.ServeHTTP(w, r)
}

// exchange trades the one-time token for the session cookie and sends the
// browser on to the same page without the token, so it leaves no usable
// link in the history.
func (f *uiForwarder) exchange(w http.ResponseWriter, r *http.Request, tok string) {
	f.mu.Lock()
	ok := !f.used && subtle.ConstantTimeCompare([]byte(tok), []byte(f.token)) == 1
	if ok {
		f.used = true
	}
	f.mu.Unlock()
	if !ok {
		refuse(w, http.StatusForbidden, "this link was used already or is wrong; run kiln ui again for a new one")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: f.cookie, Value: f.session, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
	next := url.URL{Path: r.URL.Path}
	q := r.URL.Query()
	q.Del("token")
	next.RawQuery = q.Encode()
	if !strings.HasPrefix(next.Path, uiPrefix) {
		next.Path = uiPrefix
	}
	http.Redirect(w, r, next.String(), http.StatusSeeOther)
}

func refuse(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Cache-Control", "no-store")
	http.Error(w, "kiln ui: "+msg, status)
}
