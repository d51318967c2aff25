package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// progressAfter: smaller transfers go without a progress line.
const progressAfter = 32 << 20

// progress counts the bytes of one transfer (an archive sent, a backup
// received) and, on a terminal, redraws one line on stderr twice a second:
// "sent 1.2 GiB of 3.4 GiB (35%)". Off a terminal it prints nothing, so
// scripts and logs see only the result. Transfers under progressAfter, or
// over before the first tick, print nothing either.
type progress struct {
	verb  string // sent | received
	total atomic.Int64
	n     atomic.Int64
	w     io.Writer // nil: silent
	every time.Duration
	stop  chan struct{}
	done  sync.WaitGroup
}

// startProgress starts counting; total is -1 when not known yet.
func startProgress(verb string, total int64) *progress {
	var w io.Writer
	if isTerminal(os.Stderr) {
		w = os.Stderr
	}
	return newProgress(verb, total, w, 500*time.Millisecond)
}

func newProgress(verb string, total int64, w io.Writer, every time.Duration) *progress {
	p := &progress{verb: verb, w: w, every: every, stop: make(chan struct{})}
	p.total.Store(total)
	p.done.Add(1)
	go p.draw()
	return p
}

func (p *progress) draw() {
	defer p.done.Done()
	t := time.NewTicker(p.every)
	defer t.Stop()
	drawn := false
	for {
		select {
		case <-p.stop:
			if drawn {
				fmt.Fprintf(p.w, "\r%s\n", progressLine(p.verb, p.n.Load(), p.total.Load()))
			}
			return
		case <-t.C:
			if p.w == nil || max(p.total.Load(), p.n.Load()) < progressAfter {
				continue
			}
			fmt.Fprintf(p.w, "\r%s", progressLine(p.verb, p.n.Load(), p.total.Load()))
			drawn = true
		}
	}
}

// Finish stops the line, leaving its last state on the terminal.
func (p *progress) Finish() {
	close(p.stop)
	p.done.Wait()
}

// Expect is apiclient's hook: the stream's length once the answer's header
// says it.
func (p *progress) Expect(total int64) { p.total.Store(total) }

// Reader counts what is read through it.
func (p *progress) Reader(r io.Reader) io.Reader { return &progressIO{p: p, r: r} }

// Writer counts what is written through it, and passes Expect on.
func (p *progress) Writer(w io.Writer) io.Writer { return &progressIO{p: p, w: w} }

type progressIO struct {
	p *progress
	r io.Reader
	w io.Writer
}

func (c *progressIO) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.p.n.Add(int64(n))
	return n, err
}

func (c *progressIO) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.p.n.Add(int64(n))
	return n, err
}

func (c *progressIO) Expect(total int64) { c.p.Expect(total) }

func progressLine(verb string, n, total int64) string {
	if total < 0 {
		return fmt.Sprintf("%s %s", verb, humanSize(n))
	}
	pct := 100 * float64(n) / float64(max(total, 1))
	return fmt.Sprintf("%s %s of %s (%.0f%%)", verb, humanSize(n), humanSize(total), pct)
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
