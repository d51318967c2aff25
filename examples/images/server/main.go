// Command image-server is kiln's example image serving image: `serve` loads
// /opt/ml/model/model.json (examples/images/model) and answers, in the
// formats of the image serving contract (examples/images/testdata/golden.json
// proves them byte for byte):
//
//	GET  /ping                      200 once the model is loaded
//	POST /invocations               Content-Type application/x-image, the body one
//	                                PNG or JPEG; the predicted label and a newline (text/csv)
//	GET  /v2/health/ready|live      Open Inference Protocol v2
//	GET  /v2/models/{name}[/ready]  name = the pipeline ($KILN_PIPELINE, else "model")
//	POST /v2/models/{name}/infer    input "input" BYTES [n], base64 images -> output "label" BYTES [n]
//
// An image that does not decode is a 400 with a one-line reason. It listens
// on the unix socket $KILN_SOCKET when set (no network needed), else on TCP
// port $SAGEMAKER_BIND_TO_PORT (default 8080) on all addresses. SIGTERM
// drains in-flight requests and exits 0.
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

	"github.com/kiln-edge/kiln/examples/images/model"
)

func main() {
	modelDir := flag.String("model-dir", "/opt/ml/model", "folder holding model.json")
	flag.Parse()
	if flag.Arg(0) != "serve" {
		fmt.Fprintf(os.Stderr, "usage: image-server serve (got %q)\n", strings.Join(flag.Args(), " "))
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
	fmt.Printf("serving model %s (%dx%d, classes %s) on %s\n", name, m.Size, m.Size,
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
