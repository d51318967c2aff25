// Command testbox is the runtime tests' image: small subcommands that show
// from inside a container what kiln set up (diag), misbehave on purpose
// (hog, crash, ignore SIGTERM), or serve on TCP 8080 only.
package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: testbox diag|hog|sleep|lines|serve-tcp|serve-sock|hold|crash|fail")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "diag":
		diag()
	case "hog":
		var keep [][]byte
		for {
			b := make([]byte, 4<<20)
			for i := range b {
				b[i] = byte(i)
			}
			keep = append(keep, b)
		}
	case "sleep": // sleep DURATION [ignore-term]
		d, _ := time.ParseDuration(os.Args[2])
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		ignore := len(os.Args) > 3 && os.Args[3] == "ignore-term"
		deadline := time.After(d)
		for {
			select {
			case <-deadline:
				return
			case <-sig:
				fmt.Println("got SIGTERM")
				if !ignore {
					os.Exit(0)
				}
			}
		}
	case "lines": // lines N INTERVAL CODE
		n, _ := strconv.Atoi(os.Args[2])
		every, _ := time.ParseDuration(os.Args[3])
		code, _ := strconv.Atoi(os.Args[4])
		for i := range n {
			fmt.Printf("line %d\n", i)
			time.Sleep(every)
		}
		os.Exit(code)
	case "serve-tcp":
		http.HandleFunc("/ping", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "pong") })
		http.HandleFunc("/whoami", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%d %s\n", os.Getuid(), r.Host)
		})
		ln, err := net.Listen("tcp", "0.0.0.0:8080")
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
		_ = http.Serve(ln, nil)
	case "serve-sock": // like serve-tcp, on $KILN_SOCKET
		http.HandleFunc("/ping", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "pong") })
		ln, err := net.Listen("unix", os.Getenv("KILN_SOCKET"))
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
		_ = http.Serve(ln, nil)
	case "hold": // hold PATH TEXT: write TEXT to PATH (umask 022: world-readable), then sleep until SIGTERM
		if err := os.WriteFile(os.Args[2], []byte(os.Args[3]), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println("holding", os.Args[2])
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		<-sig
	case "crash":
		time.Sleep(100 * time.Millisecond)
		fmt.Println("crashing")
		os.Exit(3)
	case "fail":
		_ = os.WriteFile("/opt/ml/output/failure", []byte(strings.Join(os.Args[2:], " ")+"\n"), 0o644)
		os.Exit(1)
	default:
		fmt.Fprintln(os.Stderr, "unknown subcommand "+os.Args[1])
		os.Exit(2)
	}
}

func diag() {
	out := map[string]any{"uid": os.Getuid(), "gid": os.Getgid()}
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if ok && (k == "CapEff" || k == "CapBnd" || k == "NoNewPrivs" || k == "Seccomp") {
				out[k] = strings.TrimSpace(v)
			}
		}
	}
	if b, err := os.ReadFile("/proc/self/mounts"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) > 3 && f[1] == "/" {
				out["rootfs_options"] = f[3]
			}
		}
	}
	out["rootfs_writable"] = os.WriteFile("/kiln-probe", []byte("x"), 0o644) == nil
	out["tmp_writable"] = os.WriteFile("/tmp/kiln-probe", []byte("x"), 0o644) == nil
	var ifaces []string
	if ifs, err := net.Interfaces(); err == nil {
		for _, i := range ifs {
			ifaces = append(ifaces, i.Name)
		}
	}
	out["interfaces"] = ifaces
	env := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "KILN_") || strings.HasPrefix(k, "TRAINING_") || strings.HasPrefix(k, "NVIDIA_") || strings.HasPrefix(k, "FAKE_") {
			env[k] = v
		}
	}
	out["env"] = env
	var devs []string
	if ents, err := os.ReadDir("/dev"); err == nil {
		for _, e := range ents {
			devs = append(devs, e.Name())
		}
	}
	out["dev"] = devs
	if b, err := os.ReadFile("/opt/ml/input/config/hyperparameters.json"); err == nil {
		out["hyperparameters"] = string(b)
	}
	if p := os.Getenv("DIAG_READ"); p != "" {
		b, err := os.ReadFile(p)
		out["read"] = string(b)
		if err != nil {
			out["read"] = "error: " + err.Error()
		}
	}
	if p := os.Getenv("DIAG_WRITE"); p != "" {
		out["write"] = "ok"
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			out["write"] = "error: " + err.Error()
		}
	}
	if a := os.Getenv("DIAG_DIAL"); a != "" {
		out["dial"] = "ok"
		c, err := net.DialTimeout("tcp", a, 2*time.Second)
		if err != nil {
			out["dial"] = "error: " + err.Error()
		} else {
			_ = c.Close()
		}
	}
	if ents, err := os.ReadDir("/proc"); err == nil {
		var pids []string
		for _, e := range ents {
			if _, err := strconv.Atoi(e.Name()); err == nil {
				pids = append(pids, e.Name())
			}
		}
		out["pids"] = pids
	}
	if err := os.WriteFile("/opt/ml/input/config/x", nil, 0o644); err == nil {
		out["config_writable"] = true
	}
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
}
