// Command kilnd is kiln's daemon: flags -> config -> daemon.New -> Run.
// Everything else lives in package daemon.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/kiln-edge/kiln/daemon"
	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/systemd"
)

// Set at link time by the Makefile.
var (
	version   = "dev"
	commit    = ""
	buildDate = ""
)

func main() {
	root := flag.String("root", "", "put /etc/kiln, /var/lib/kiln and /run/kiln under this folder")
	runDir := flag.String("run-dir", "", "folder for the API and endpoint sockets alone (default /run/kiln, or ROOT/run/kiln)")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	build := api.BuildInfo{Version: version, Commit: commit, BuildDate: buildDate, GoVersion: runtime.Version()}
	if *showVersion {
		fmt.Printf("kilnd %s (commit %s, built %s, %s)\n", build.Version, build.Commit, build.BuildDate, build.GoVersion)
		return
	}

	// Signals first, before any slow start-up. After the first one, stop()
	// restores the default disposition, so a second SIGTERM kills at once.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() { <-ctx.Done(); stop() }()

	if err := run(ctx, *root, *runDir, build); err != nil {
		fmt.Fprintln(os.Stderr, "kilnd: "+err.Error())
		os.Exit(1)
	}
}

func run(ctx context.Context, root, runDir string, build api.BuildInfo) error {
	cfg, err := config.LoadDaemon(config.NewPaths(root, runDir))
	if err != nil {
		return err
	}
	log := slog.New(systemd.NewLogHandler(os.Stderr, cfg.SlogLevel()))
	// New takes no ctx on purpose: its start reload is a bounded local read
	// whose event must be recorded even if a signal lands mid-start; Run(ctx)
	// sees the signal right after.
	d, err := daemon.New(daemon.Options{Config: cfg, Build: build, Log: log}) //nolint:contextcheck // see above
	if err != nil {
		return err
	}
	return d.Run(ctx)
}
