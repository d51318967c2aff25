// Command faultbox is a trainer and server that misbehave on request, for
// kiln's containment tests: built into an image like the tabular example
// (examples/tabular/images), it runs `faultbox train` and `faultbox serve`
// under the SageMaker contract.
//
// The trainer's behaviour is its hyperparameter "fault":
//
//	none       write a small model and exit 0
//	crash      write /opt/ml/output/failure and exit 3
//	hang       sleep forever, ignoring SIGTERM (the timeout must SIGKILL it)
//	forkbomb   start copies of itself until the kernel refuses, then fail
//	oom        allocate and touch memory until killed
//	logs       write log lines as fast as it can, forever
//	bigmodel   write a model of "model_mib" MiB (default 64)
//
// The hyperparameter "serve" is copied into the model; the server reads it:
//
//	""         answer every row with "benign", the same for all
//	crash      exit 4 at start
//	hang       never listen (never ready)
//
// and a request whose first value is one of these makes the running server
// misbehave: -1 exit (crash), -2 allocate until OOM-killed, -3 fork until
// refused and answer with the count, -4 never answer.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: faultbox train|serve|child")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "train":
		train()
	case "serve":
		serve()
	case "child": // one process of a fork bomb: it just stays
		time.Sleep(time.Hour)
	default:
		fmt.Fprintln(os.Stderr, "unknown subcommand "+os.Args[1])
		os.Exit(2)
	}
}

func fail(code int, why string) {
	_ = os.WriteFile("/opt/ml/output/failure", []byte(why+"\n"), 0o644)
	fmt.Fprintln(os.Stderr, why)
	os.Exit(code)
}

func train() {
	hp := map[string]string{}
	if b, err := os.ReadFile("/opt/ml/input/config/hyperparameters.json"); err == nil {
		_ = json.Unmarshal(b, &hp)
	}
	fmt.Printf("faultbox train: fault %q\n", hp["fault"])
	switch hp["fault"] {
	case "", "none":
	case "crash":
		fail(3, "faultbox: crashing on purpose")
	case "hang":
		signal.Ignore(syscall.SIGTERM)
		sleepForever()
	case "forkbomb":
		n := forkbomb()
		fail(4, fmt.Sprintf("faultbox: fork refused after %d processes", n))
	case "oom":
		hog()
	case "logs":
		w := bufio.NewWriterSize(os.Stdout, 64<<10)
		line := strings.Repeat("x", 100)
		for i := 0; ; i++ {
			fmt.Fprintf(w, "%d %s\n", i, line)
		}
	case "bigmodel":
		mib, err := strconv.Atoi(hp["model_mib"])
		if err != nil {
			mib = 64
		}
		f, err := os.Create("/opt/ml/model/weights.bin")
		if err != nil {
			fail(1, err.Error())
		}
		buf := make([]byte, 1<<20)
		for i := range mib {
			buf[0] = byte(i)
			if _, err := f.Write(buf); err != nil {
				fail(1, err.Error())
			}
		}
		_ = f.Close()
	default:
		fail(2, "faultbox: unknown fault "+hp["fault"])
	}
	if err := os.WriteFile("/opt/ml/model/serve", []byte(hp["serve"]), 0o644); err != nil {
		fail(1, err.Error())
	}
	fmt.Println("faultbox train: model written")
}

// forkbomb starts copies of itself until the kernel refuses one, and
// returns how many it started.
func forkbomb() int {
	n := 0
	for ; n < 100000; n++ {
		c := exec.Command("/proc/self/exe", "child")
		if err := c.Start(); err != nil {
			fmt.Printf("fork %d: %v\n", n, err)
			return n
		}
	}
	return n
}

// hog allocates and touches memory in 4 MiB steps until the OOM killer ends it.
func hog() {
	var keep [][]byte
	for {
		b := make([]byte, 4<<20)
		for i := range b {
			b[i] = byte(i)
		}
		keep = append(keep, b)
	}
}

// sleepForever blocks without tripping the Go runtime's deadlock check,
// which a bare select{} in a single-goroutine program does (exit 2).
func sleepForever() {
	for {
		time.Sleep(time.Hour)
	}
}

func serve() {
	mode, _ := os.ReadFile("/opt/ml/model/serve")
	fmt.Printf("faultbox serve: mode %q\n", mode)
	switch string(mode) {
	case "crash":
		fmt.Fprintln(os.Stderr, "faultbox serve: crashing on purpose")
		os.Exit(4)
	case "hang":
		sleepForever()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/ping", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/invocations", func(w http.ResponseWriter, r *http.Request) {
		sc := bufio.NewScanner(r.Body)
		var out strings.Builder
		for sc.Scan() {
			first, _, _ := strings.Cut(sc.Text(), ",")
			switch strings.TrimSpace(first) {
			case "-1":
				fmt.Fprintln(os.Stderr, "faultbox serve: crash requested")
				os.Exit(5)
			case "-2":
				hog()
			case "-3":
				fmt.Fprintf(&out, "forked %d\n", forkbomb())
				continue
			case "-4":
				sleepForever()
			}
			out.WriteString("benign\n")
		}
		_, _ = w.Write([]byte(out.String()))
	})
	var ln net.Listener
	var err error
	if sock := os.Getenv("KILN_SOCKET"); sock != "" {
		_ = os.Remove(sock)
		ln, err = net.Listen("unix", sock)
	} else {
		ln, err = net.Listen("tcp", ":8080")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		<-sig
		os.Exit(0)
	}()
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	_ = srv.Serve(ln)
}
