// Command tabular-server is kiln's example serving image: `serve` loads
// /opt/ml/model/model.json and answers, in the formats DESIGN.md pins (and
// examples/tabular/testdata/golden.json proves):
//
//	GET  /ping                      200 once the model is loaded
//	POST /invocations               text/csv rows, no header, features in training order,
//	                                or application/jsonlines, one object a row keyed by
//	                                feature name (other keys ignored); one predicted
//	                                label per line, in order
//	GET  /v2/health/ready|live      Open Inference Protocol v2
//	GET  /v2/models/{name}[/ready]  name = the pipeline ($KILN_PIPELINE, else "model")
//	POST /v2/models/{name}/infer    input "input" FP64 [rows, features] -> output "label" BYTES [rows]
//
// It listens on the unix socket $KILN_SOCKET when set (no network needed),
// else on TCP port $SAGEMAKER_BIND_TO_PORT (default 8080) on all addresses.
// SIGTERM drains in-flight requests and exits 0.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/kiln-edge/kiln/examples/tabular/model"
)

func main() {
	modelDir := flag.String("model-dir", "/opt/ml/model", "folder holding model.json")
	flag.Parse()
	if flag.Arg(0) != "serve" {
		fmt.Fprintf(os.Stderr, "usage: tabular-server serve (got %q)\n", strings.Join(flag.Args(), " "))
		os.Exit(2)
	}
	if err := run(*modelDir); err != nil {
		fmt.Fprintln(os.Stderr, "serve: "+err.Error())
		os.Exit(1)
	}
}

func run(modelDir string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	m, err := model.Load(filepath.Join(modelDir, "model.json"))
	if err != nil {
		return err
	}
	name := os.Getenv("KILN_PIPELINE")
	if name == "" {
		name = "model"
	}
	var ln net.Listener
	if sock := os.Getenv("KILN_SOCKET"); sock != "" {
		_ = os.Remove(sock) //nolint:gosec // G703: kilnd sets KILN_SOCKET to a path in the folder it mounts for this server; a stale socket goes
		ln, err = net.Listen("unix", sock)
	} else {
		port := os.Getenv("SAGEMAKER_BIND_TO_PORT")
		if port == "" {
			port = "8080"
		}
		ln, err = net.Listen("tcp", ":"+port)
	}
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: model.NewHandler(m, name), ReadHeaderTimeout: 10 * time.Second}
	fmt.Printf("serving model %s (%d features, classes %s) on %s\n", name, len(m.Features),
		strings.Join(m.Classes, ","), ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	fmt.Println("stopped by SIGTERM")
	return nil
}
