// Command kiln is the operator's CLI for kilnd. It talks to kilnd over its
// unix socket (--socket, else $KILN_API_SOCKET, else /run/kiln/kiln.sock),
// prints tables for people and -o json for scripts, and exits non-zero with a
// one-line reason. It links none of containerd, NVML or bbolt (a test checks).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/alecthomas/kong"

	"github.com/kiln-edge/kiln/daemon/api"
	"github.com/kiln-edge/kiln/daemon/apiclient"
)

// Set at link time by the Makefile; pkgVersion only by packaging/build.sh,
// as dpkg and rpm show it (1.2.3-1), since version is git's description.
var (
	version    = "dev"
	commit     = ""
	buildDate  = ""
	pkgVersion = ""
)

// globals are the flags every command sees, bound into each Run.
type globals struct {
	Socket string `help:"kilnd API socket (default $$KILN_API_SOCKET, else ${default_socket})." placeholder:"PATH"`
	Output string `short:"o" enum:"table,json" default:"table" help:"Output format: table or json."`
}

type cli struct {
	globals

	Status      statusCmd      `cmd:"" help:"Show what kilnd is doing."`
	Version     versionCmd     `cmd:"" help:"Show the versions of kiln and kilnd."`
	Doctor      doctorCmd      `cmd:"" help:"Check containerd, state dir, disk, NVML and the socket; print a fix for each problem."`
	Pipelines   pipelinesCmd   `cmd:"" help:"List, show, validate and reload pipeline specs."`
	GPU         gpuCmd         `cmd:"" name:"gpu" help:"Show GPUs, their health, leases and cordons."`
	Datasets    datasetsCmd    `cmd:"" help:"List dataset versions and quarantined batches; show one; release one."`
	Events      eventsCmd      `cmd:"" help:"List the audit events, or follow them with -f."`
	Backup      backupCmd      `cmd:"" help:"Write a consistent copy of kilnd's database to FILE, and the prediction logs (large inputs left out) to FILE.predictions.tar."`
	Runs        runsCmd        `cmd:"" help:"List, show, start and cancel training runs."`
	Logs        logsCmd        `cmd:"" help:"Print a run's training log; -f follows it."`
	Models      modelsCmd      `cmd:"" help:"List models and show their metrics, lineage and history."`
	Promote     promoteCmd     `cmd:"" help:"Make a model live, through the evaluation and gate unless --force."`
	Rollback    rollbackCmd    `cmd:"" help:"Flip a pipeline back to its standby model (or --to MODEL)."`
	Pin         pinCmd         `cmd:"" help:"Hold a pipeline on a model; automatic promotion and rollback stop."`
	Unpin       unpinCmd       `cmd:"" help:"Turn a pipeline's automation back on."`
	Lineage     lineageCmd     `cmd:"" help:"What an ID descends from (--up) or what descends from it (--down); --dot for Graphviz."`
	Predict     predictCmd     `cmd:"" help:"Send rows (CSV or JSON Lines, on stdin or in a file) or image files through a pipeline's endpoint."`
	Predictions predictionsCmd `cmd:"" help:"Purge records from a pipeline's prediction log."`
	Feedback    feedbackCmd    `cmd:"" help:"Send labelled rows or late labels (FILE or stdin) to a pipeline's monitor."`
	GC          gcCmd          `cmd:"" name:"gc" help:"Collect garbage now: pruned models' files, unreferenced blobs, expired quarantine and logs; --images and --foreign (other installations' containers) on request."`
	Images      imagesCmd      `cmd:"" help:"Import image archives (air-gapped) and list images."`
	UI          uiCmd          `cmd:"" name:"ui" help:"Open kilnd's read-only dashboard in your browser, through a loopback port and a one-time link."`
	Completion  completionCmd  `cmd:"" help:"Print a shell completion script (bash, zsh or fish); needs no daemon."`
}

func main() {
	var c cli
	kctx, code := parse(&c, os.Args[1:], os.Stderr)
	if kctx == nil {
		os.Exit(code)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	env := &cmdEnv{ctx: ctx, g: c.globals, out: os.Stdout}
	if err := kctx.Run(env); err != nil {
		fmt.Fprintln(os.Stderr, "kiln: "+firstLine(nextStep(err).Error()))
		stop()
		os.Exit(1)
	}
}

// parse reads the command line. A mistake in it is one line on stderr (the
// whole usage would bury it) and kong's usage exit status, 80; --help
// prints and exits 0 as kong does.
func parse(c *cli, args []string, stderr io.Writer) (*kong.Context, int) {
	k, err := kong.New(c,
		kong.Name("kiln"),
		kong.Description("kiln drives kilnd, the self-driving ML appliance daemon, over its local socket.\n\n"+
			"Examples:\n  kiln status\n  kiln models -p pumps\n  kiln predict pumps < rows.csv\n  kiln events -f\n\n"+
			"Every command has --help with examples; -o json prints JSON for scripts."),
		kong.Vars{"default_socket": apiclient.DefaultSocket},
	)
	if err != nil {
		fmt.Fprintln(stderr, "kiln: "+err.Error())
		return nil, 1
	}
	kctx, err := k.Parse(args)
	if err != nil {
		help := "kiln --help"
		var pe *kong.ParseError
		if errors.As(err, &pe) && pe.Context != nil {
			if cmd := pe.Context.Command(); cmd != "" {
				help = "kiln " + cmdWords(cmd) + " --help"
			}
		}
		fmt.Fprintf(stderr, "kiln: %s (see %s)\n", firstLine(err.Error()), help)
		code := 80
		var ec kong.ExitCoder
		if errors.As(err, &ec) {
			code = ec.ExitCode()
		}
		return nil, code
	}
	return kctx, 0
}

// cmdWords keeps the command words of kong's "lineage <id>": the
// arguments are not part of the help command.
func cmdWords(cmd string) string {
	var words []string
	for _, w := range strings.Fields(cmd) {
		if !strings.HasPrefix(w, "<") {
			words = append(words, w)
		}
	}
	return strings.Join(words, " ")
}

// cmdEnv is what every command's Run receives.
type cmdEnv struct {
	ctx context.Context
	g   globals
	out *os.File
}

func (e *cmdEnv) client() *apiclient.Client { return apiclient.New(e.g.Socket) }

func (e *cmdEnv) json() bool { return e.g.Output == "json" }

func clientBuild() api.BuildInfo {
	return api.BuildInfo{Version: version, Commit: commit, BuildDate: buildDate}
}
