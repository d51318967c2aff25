package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The serve group's load generator: a closed-loop HTTP/1.1 client over a
// unix socket, run in a child process (kilnbench re-executed) so it shares
// no Go runtime, scheduler or GC with the endpoint under test. wrk cannot
// be used: it speaks TCP only, and the direct path is the container's unix
// socket. Each connection sends the same prebuilt request, reads the status
// line and headers and skips a Content-Length body; nothing allocates per
// request but the latency sample.

const svLoadEnv = "KILNBENCH_SERVE_LOAD"

func init() {
	if spec := os.Getenv(svLoadEnv); spec != "" {
		os.Exit(svRunLoad(spec))
	}
}

// svLoadSpec is what the parent asks of the child (JSON in svLoadEnv).
type svLoadSpec struct {
	Sock    string        `json:"sock"`
	Conns   int           `json:"conns"`
	Warm    time.Duration `json:"warm"` // requests answered before the window are not counted
	Dur     time.Duration `json:"dur"`
	Request []byte        `json:"request"` // the whole request, head and body
}

// svLoadResult is what the child reports (JSON on stdout).
type svLoadResult struct {
	Requests int64   `json:"requests"` // answered inside the window
	Total    int64   `json:"total"`    // answered at any time (for CPU per request)
	Errors   int64   `json:"errors"`   // non-2xx answers and transport errors, any time
	RPS      float64 `json:"rps"`
	P50us    float64 `json:"p50_us"`
	P99us    float64 `json:"p99_us"`
	FirstErr string  `json:"first_err,omitempty"`
}

// svLoad runs one load in a child process.
func svLoad(ctx context.Context, s svLoadSpec) (svLoadResult, error) {
	var res svLoadResult
	self, err := os.Executable()
	if err != nil {
		return res, err
	}
	spec, err := json.Marshal(s)
	if err != nil {
		return res, err
	}
	cmd := exec.CommandContext(ctx, self)
	cmd.Env = append(os.Environ(), svLoadEnv+"="+string(spec))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return res, fmt.Errorf("load on %s: %v: %s", s.Sock, err, bytes.TrimSpace(stderr.Bytes()))
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return res, fmt.Errorf("load on %s: %v: %q", s.Sock, err, out)
	}
	if res.Requests == 0 {
		return res, fmt.Errorf("load on %s: no request answered (%d errors, first: %s)", s.Sock, res.Errors, res.FirstErr)
	}
	return res, nil
}

func svRunLoad(specJSON string) int {
	var s svLoadSpec
	if err := json.Unmarshal([]byte(specJSON), &s); err != nil {
		fmt.Fprintln(os.Stderr, "load spec:", err)
		return 2
	}
	var (
		measuring, stop atomic.Bool
		errs            atomic.Int64
		firstErr        atomic.Value
		wg              sync.WaitGroup
	)
	lats := make([][]int64, s.Conns)
	answered := make([]int64, s.Conns)
	fail := func(err error) {
		errs.Add(1)
		firstErr.CompareAndSwap(nil, err.Error())
	}
	for i := range s.Conns {
		wg.Go(func() {
			lat := make([]int64, 0, 1<<16)
			for !stop.Load() {
				c, err := net.Dial("unix", s.Sock)
				if err != nil {
					fail(err)
					time.Sleep(10 * time.Millisecond)
					continue
				}
				br := bufio.NewReaderSize(c, 16<<10)
				for !stop.Load() {
					t0 := time.Now()
					if _, err = c.Write(s.Request); err != nil {
						break
					}
					var status int
					if status, err = svReadResponse(br); err != nil {
						break
					}
					d := time.Since(t0)
					answered[i]++
					if status/100 != 2 {
						fail(fmt.Errorf("HTTP %d", status))
					}
					if measuring.Load() {
						lat = append(lat, int64(d))
					}
				}
				if err != nil && !stop.Load() {
					fail(err)
				}
				_ = c.Close() // the load is over, or the connection broke
			}
			lats[i] = lat
		})
	}
	time.Sleep(s.Warm)
	measuring.Store(true)
	t0 := time.Now()
	time.Sleep(s.Dur)
	measuring.Store(false)
	elapsed := time.Since(t0)
	stop.Store(true)
	wg.Wait()
	all := slices.Concat(lats...)
	slices.Sort(all)
	res := svLoadResult{Requests: int64(len(all)), Total: sum(answered), Errors: errs.Load(), RPS: float64(len(all)) / elapsed.Seconds()}
	if n := len(all); n > 0 {
		res.P50us = float64(all[n/2]) / 1e3
		res.P99us = float64(all[min(n-1, n*99/100)]) / 1e3
	}
	if v := firstErr.Load(); v != nil {
		res.FirstErr = v.(string)
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return 1
	}
	return 0
}

var errNoLength = errors.New("response without Content-Length")

// svReadResponse reads one response and skips its body; it needs a
// Content-Length (every path under test gives one for a small answer).
func svReadResponse(br *bufio.Reader) (status int, err error) {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return 0, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, fmt.Errorf("malformed status line %q", line)
	}
	for _, c := range line[9:12] {
		status = status*10 + int(c-'0')
	}
	n := -1
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		if len(line) <= 2 {
			break
		}
		const cl = "content-length:"
		if len(line) > len(cl) && bytes.EqualFold(line[:len(cl)], []byte(cl)) {
			n = 0
			for _, c := range bytes.TrimSpace(line[len(cl):]) {
				n = n*10 + int(c-'0')
			}
		}
	}
	if n < 0 {
		return 0, errNoLength
	}
	_, err = br.Discard(n)
	return status, err
}

func sum(xs []int64) (n int64) {
	for _, x := range xs {
		n += x
	}
	return n
}
