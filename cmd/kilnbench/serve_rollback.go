package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func init() { register(Group{Name: "rollback", Run: benchRollback}) }

// rbReq is one request of the load: when it started and ended, and which
// model answered (-1: failed or non-2xx).
type rbReq struct {
	start, end time.Time
	model      int
}

// benchRollback flips a kiln endpoint between two backends (live and warm
// standby, separate processes on unix sockets) 30 times under 32-connection
// load. A swap's time runs from the Flip call until the first answer from
// the standby to a request started after that call: from then on every new
// request is the standby's (Flip returning guarantees it, and the load
// checks it).
func benchRollback(ctx context.Context, opt Options) []Figure {
	const (
		swapName, swapGoal = "rollback.swap_p99_ms", "<= 100"
		badName, badGoal   = "rollback.non2xx", "== 0"
		swaps, clients     = 30, 32
	)
	fail := func(why string) []Figure {
		return []Figure{unmeasured(swapName, "ms", swapGoal, why), unmeasured(badName, "responses", badGoal, why)}
	}
	gap := 200 * time.Millisecond
	if opt.Quick {
		gap = 50 * time.Millisecond
	}
	dir, err := os.MkdirTemp("", "kb-rb")
	if err != nil {
		return fail(err.Error())
	}
	defer func() { _ = os.RemoveAll(dir) }() // best-effort cleanup of scratch files
	var backends [2]*svBackend
	for i := range backends {
		b, err := svStartBackend(dir, fmt.Sprintf("bench/m%d", i+1))
		if err != nil {
			return fail(err.Error())
		}
		defer b.stop()
		backends[i] = b
	}
	e, addr, err := svEndpoint(dir, backends[0])
	if err != nil {
		return fail(err.Error())
	}
	defer svShutdown(ctx, e)

	tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	url := "http://" + addr + "/invocations"
	var (
		stop     atomic.Bool
		wg       sync.WaitGroup
		mu       sync.Mutex
		all      []rbReq
		firstErr atomic.Value
	)
	for range clients {
		wg.Go(func() {
			var mine []rbReq
			for !stop.Load() && ctx.Err() == nil {
				r := rbReq{start: time.Now(), model: -1}
				res, err := client.Post(url, "text/csv", strings.NewReader(svRow))
				if err == nil {
					_, err = io.Copy(io.Discard, res.Body)
					_ = res.Body.Close() // drained above
					if err == nil && res.StatusCode/100 == 2 {
						switch res.Header.Get("X-Kiln-Model") {
						case backends[0].model:
							r.model = 0
						case backends[1].model:
							r.model = 1
						}
					} else if err == nil {
						err = fmt.Errorf("status %d", res.StatusCode)
					}
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, err.Error())
				}
				r.end = time.Now()
				mine = append(mine, r)
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		})
	}
	type swap struct {
		call, returned time.Time
		to             int
	}
	var done []swap
	time.Sleep(gap)
	for i := range swaps {
		to := (i + 1) % 2
		s := swap{call: time.Now(), to: to}
		e.Flip(backends[to])
		s.returned = time.Now()
		done = append(done, s)
		time.Sleep(gap)
	}
	stop.Store(true)
	wg.Wait()

	var bad, late int
	for _, r := range all {
		if r.model < 0 {
			bad++
		}
	}
	var times, flipUS []float64
	for i, s := range done {
		next := time.Now().Add(time.Hour)
		if i+1 < len(done) {
			next = done[i+1].call
		}
		first := time.Time{}
		for _, r := range all {
			if r.model < 0 || r.start.Before(s.call) || !r.start.Before(next) {
				continue
			}
			if r.model == s.to {
				if first.IsZero() || r.end.Before(first) {
					first = r.end
				}
			} else if !r.start.Before(s.returned) && r.end.Before(next) {
				late++ // started after Flip returned, ended before the next flip, answered by the old model
			}
		}
		if first.IsZero() {
			return fail(fmt.Sprintf("swap %d: no answer from the standby before the next swap", i+1))
		}
		times = append(times, float64(first.Sub(s.call))/1e6)
		flipUS = append(flipUS, float64(s.returned.Sub(s.call))/1e3)
	}
	st := e.Stats()
	detail := fmt.Sprintf("%d swaps, %d requests over %d connections; swap p50 %.2f ms max %.2f ms; Flip call p99 %.0f us; "+
		"requests started after Flip returned answered by the old model: %d; endpoint retries %d",
		swaps, len(all), clients, median(times), percentile(times, 100), percentile(flipUS, 99), late, st.Retries)
	badDetail := fmt.Sprintf("%d non-2xx or failed of %d requests across %d swaps", bad, len(all), swaps)
	if v := firstErr.Load(); v != nil {
		badDetail += "; first: " + v.(string)
	}
	swapFig := measured(swapName, percentile(times, 99), "ms", swapGoal, detail)
	if late > 0 {
		swapFig.Pass = false // the standby was not serving all new requests
	}
	return []Figure{swapFig, measured(badName, float64(bad), "responses", badGoal, badDetail)}
}
