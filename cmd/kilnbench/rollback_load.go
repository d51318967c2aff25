package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// rbLoad is the rollback group's load: a Go closed-loop generator, a fixed
// number of connections each sending one request after the other to an
// endpoint on a unix socket, recording for every request when it was sent
// and answered (wall clock, Unix ns, the clock kilnd stamps its events
// with) and which model answered (the endpoint's X-Kiln-Model header).
// Every non-2xx answer and every transport error (refused connection,
// reset, body cut short) is counted as failed: this is rollback.non2xx.
type rbLoad struct {
	url  string
	body string
	hc   *http.Client
	tr   *http.Transport

	stop   atomic.Bool
	wg     sync.WaitGroup
	conns  [][]rbReq // per connection, merged once stopped
	failed atomic.Int64
	sent   atomic.Int64
	first  atomic.Value // string: the first failure, for the detail
}

// rbReq is one request: sent and answered (Unix ns, wall clock) and the
// model that answered ("" when it failed or answered non-2xx).
type rbReq struct {
	start, end int64
	model      string
}

// newRBLoad makes a load of conns connections to the endpoint listening on
// the unix socket sock, each request carrying body (one CSV row).
func newRBLoad(sock, body string, conns int) *rbLoad {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
	}
	return &rbLoad{url: "http://kiln/invocations", body: body, tr: tr, conns: make([][]rbReq, conns),
		hc: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

// start sends requests on every connection until end is called.
func (l *rbLoad) start() {
	for i := range l.conns {
		l.wg.Go(func() {
			models := map[string]string{} // interned: a few distinct names over millions of requests
			for !l.stop.Load() {
				r := l.once(models)
				l.conns[i] = append(l.conns[i], r)
			}
		})
	}
}

// once sends one request and classifies its answer.
func (l *rbLoad) once(models map[string]string) rbReq {
	r := rbReq{start: time.Now().UnixNano()}
	l.sent.Add(1)
	res, err := l.hc.Post(l.url, "text/csv", strings.NewReader(l.body))
	if err == nil {
		_, err = io.Copy(io.Discard, res.Body)
		_ = res.Body.Close() // read to the end above; an error there is err
		if err == nil && res.StatusCode/100 != 2 {
			err = fmt.Errorf("HTTP %d from %s", res.StatusCode, res.Header.Get("X-Kiln-Model"))
		}
		if err == nil {
			m := res.Header.Get("X-Kiln-Model")
			if _, ok := models[m]; !ok {
				models[m] = m
			}
			r.model = models[m]
		}
	}
	r.end = time.Now().UnixNano()
	if err != nil {
		l.failed.Add(1)
		l.first.CompareAndSwap(nil, err.Error())
	}
	return r
}

// end stops the load and returns every request, connection by connection.
func (l *rbLoad) end() []rbReq {
	l.stop.Store(true)
	l.wg.Wait()
	l.tr.CloseIdleConnections()
	var all []rbReq
	for _, c := range l.conns {
		all = append(all, c...)
	}
	return all
}

func (l *rbLoad) firstFailure() string {
	if v := l.first.Load(); v != nil {
		return v.(string)
	}
	return ""
}
