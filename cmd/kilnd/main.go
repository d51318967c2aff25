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
	"strings"
	"syscall"
	"time"

	"github.com/kiln-edge/kiln/daemon"
	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/daemon/apiclient"
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
	reload := flag.Bool("reload", false, "ask the running kilnd to reload its pipelines; exit non-zero with the reason when it rejects them (the unit's ExecReload)")
	flag.Parse()
	build := api.BuildInfo{Version: version, Commit: commit, BuildDate: buildDate, GoVersion: runtime.Version()}
	if *showVersion {
		fmt.Printf("kilnd %s (commit %s, built %s, %s)\n", build.Version, build.Commit, build.BuildDate, build.GoVersion)
		return
	}

	if *reload {
		if err := reloadRunning(*root, *runDir); err != nil {
			fmt.Fprintln(os.Stderr, "kilnd: "+err.Error())
			os.Exit(1)
		}
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

// reloadRunning is `systemctl reload kilnd`: unlike a bare SIGHUP, it waits
// for the reload over the API socket, so a rejected spec fails the reload
// job and its reason lands in the unit's journal.
func reloadRunning(root, runDir string) error {
	paths := config.NewPaths(root, runDir)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := apiclient.New(paths.APISocket).ReloadPipelines(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("pipelines reloaded: added %s, changed %s, removed %s, unchanged %s\n",
		names(r.Added), names(r.Changed), names(r.Removed), names(r.Unchanged))
	for _, w := range r.Warnings {
		fmt.Println("warning: " + w)
	}
	return nil
}

func names(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ",")
}
