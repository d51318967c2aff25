package sagemaker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"
)

// ModelName is the v2 model name a server answers to: the pipeline's name
// ($KILN_PIPELINE, which kilnd sets), else "model".
func ModelName() string {
	if name := os.Getenv("KILN_PIPELINE"); name != "" {
		return name
	}
	return "model"
}

// Listen opens the serving socket: the unix socket $KILN_SOCKET when set
// (kilnd's way: no network needed), else TCP port $SAGEMAKER_BIND_TO_PORT
// (default 8080) on all addresses.
func Listen() (net.Listener, error) {
	if sock := os.Getenv("KILN_SOCKET"); sock != "" {
		_ = os.Remove(sock) //nolint:gosec // G703: kilnd sets KILN_SOCKET to a path in the folder it mounts for this server; a stale socket goes
		return net.Listen("unix", sock)
	}
	port := os.Getenv("SAGEMAKER_BIND_TO_PORT")
	if port == "" {
		port = "8080"
	}
	return net.Listen("tcp", ":"+port)
}

// Serve answers h on Listen's socket until ctx ends (main ties it to
// SIGTERM), then drains in-flight requests for up to 10s and returns nil.
// It prints "<banner> on <address>" once listening.
func Serve(ctx context.Context, h http.Handler, banner string) error {
	ln, err := Listen()
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	fmt.Printf("%s on %s\n", banner, ln.Addr())
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
