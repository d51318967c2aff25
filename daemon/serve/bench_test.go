package serve

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// bigLog is a 1M-prediction log shared by the lookup benchmarks (building
// it takes a few seconds), removed when the test binary ends.
type benchLog struct {
	once sync.Once
	dir  string
	ids  []string
	err  error
}

// bigLogs by segment size: the default 64 MiB, and 16 MiB for a log of
// larger records (more segments to search).
var bigLogs = map[int64]*benchLog{64 << 20: {}, 16 << 20: {}}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, l := range bigLogs {
		if l.dir != "" {
			os.RemoveAll(l.dir)
		}
	}
	os.Exit(code)
}

const bigLogRecords = 1_000_000

// buildBigLog writes 1M records through the real writer: ids as the
// endpoint makes them, a 4-feature CSV row in, a class out.
func buildBigLog(bigLog *benchLog, segBytes int64) {
	dir, err := os.MkdirTemp("", "kiln-bench-")
	if err != nil {
		bigLog.err = err
		return
	}
	bigLog.dir = dir
	pl, err := openPredLog(Options{Pipeline: "p", PredLogDir: dir, SegmentBytes: segBytes, LogBuffer: 64 << 20,
		SyncInterval: time.Millisecond}, -1, slog.New(slog.DiscardHandler))
	if err != nil {
		bigLog.err = err
		return
	}
	start := time.Now()
	bigLog.ids = make([]string, bigLogRecords)
	for i := range bigLogRecords {
		id := fmt.Sprintf("3f9a1c20b7d4-%x", i+1)
		bigLog.ids[i] = id
		pl.append([]byte(id), "p/m7", start.Add(time.Duration(i)*time.Millisecond), 900*time.Microsecond,
			[]byte("text/csv"), []byte("5.1,3.5,1.4,0.2\n"), 200, []byte("setosa\n"), false)
		if i%20000 == 19999 {
			if err := pl.flush(context.Background(), false); err != nil {
				bigLog.err = err
				return
			}
		}
	}
	if err := pl.close(); err != nil {
		bigLog.err = err
		return
	}
	if d := pl.dropped.Load(); d > 0 {
		bigLog.err = fmt.Errorf("%d records dropped while building the log", d)
		return
	}
	// The writer's last segment was closed by close; index any the
	// maintenance goroutine left (none expected).
	if _, err := RebuildIndexes(dir, "p", -1); err != nil {
		bigLog.err = err
	}
}

// BenchmarkLookup is monitor.join_lookup_per_s's core: late labels looked
// up by request id in a 1M-prediction log through the on-disk indexes
// (90% hits at random, 10% ids that are not there), one goroutine.
func BenchmarkLookup(b *testing.B) {
	for _, seg := range []int64{64 << 20, 16 << 20} {
		b.Run(fmt.Sprintf("seg=%dMiB", seg>>20), func(b *testing.B) { benchLookup(b, seg) })
	}
}

func benchLookup(b *testing.B, seg int64) {
	bigLog := bigLogs[seg]
	bigLog.once.Do(func() { buildBigLog(bigLog, seg) })
	if bigLog.err != nil {
		b.Fatal(bigLog.err)
	}
	r, err := OpenLogReader(bigLog.dir, "p")
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	segs := r.segmentNumbers()
	rng := rand.New(rand.NewPCG(1, 2))
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	for i := 0; i < b.N; i++ {
		if i%10 == 9 {
			if _, err := r.Lookup(fmt.Sprintf("absent-%d", i)); err == nil {
				b.Fatal("an absent id was found")
			}
			continue
		}
		id := bigLog.ids[rng.IntN(len(bigLog.ids))]
		rec, err := r.Lookup(id)
		if err != nil || rec.ID != id {
			b.Fatalf("Lookup(%s) = %s, %v", id, rec.ID, err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "lookups/s")
	// The rate per second of CPU: what one core would do on an idle
	// machine (this one is shared; wall time varies with the load).
	b.ReportMetric(float64(b.N)/(cpuTime()-cpu0).Seconds(), "lookups/cpu-s")
	b.ReportMetric(float64(len(segs)), "segments")
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkLookupParallel: the same (16 MiB segments, hits only) from
// GOMAXPROCS goroutines sharing one reader.
func BenchmarkLookupParallel(b *testing.B) {
	bigLog := bigLogs[16<<20]
	bigLog.once.Do(func() { buildBigLog(bigLog, 16<<20) })
	if bigLog.err != nil {
		b.Fatal(bigLog.err)
	}
	r, err := OpenLogReader(bigLog.dir, "p")
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(rand.Uint64(), 2))
		for pb.Next() {
			id := bigLog.ids[rng.IntN(len(bigLog.ids))]
			if rec, err := r.Lookup(id); err != nil || rec.ID != id {
				b.Errorf("Lookup(%s) = %s, %v", id, rec.ID, err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "lookups/s")
}

// BenchmarkEndpointLog compares the endpoint's request rate with the log
// off and on (keeping inputs), for 1 KiB and 64 KiB bodies, 32 concurrent
// keep-alive clients: monitor.predlog_throughput_ratio's shape. The Go
// client and the net/http test backend share the machine's cores with the
// endpoint, so read the on/off ratio, not the absolute rate.
func BenchmarkEndpointLog(b *testing.B) {
	for _, size := range []int{1 << 10, 64 << 10} {
		row := "5.1,3.5,1.4,0.2,1.1,2.2,3.3,4.4\n" // 32 bytes
		body := strings.Repeat(row, size/len(row))
		for _, on := range []bool{false, true} {
			name := fmt.Sprintf("%dKiB/log=%v", size>>10, on)
			b.Run(name, func(b *testing.B) {
				opt := Options{Pipeline: "bench", Log: slog.New(slog.DiscardHandler)}
				if on {
					opt.PredLogDir = shortDir(b)
				}
				te := startEndpoint(b, opt)
				te.Flip(startBackend(b, "bench/m1"))
				b.SetParallelism(16) // 32 clients on 2 cores
				b.ResetTimer()
				start := time.Now()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						res, err := te.client.Post(te.url+"/invocations", "text/csv", strings.NewReader(body))
						if err != nil {
							b.Error(err)
							return
						}
						_, _ = io.Copy(io.Discard, res.Body)
						res.Body.Close()
						if res.StatusCode != 200 {
							b.Errorf("status %d", res.StatusCode)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
				b.StopTimer()
				if on {
					s := te.Stats()
					b.ReportMetric(float64(s.LogDropped), "dropped")
				}
			})
		}
	}
}
