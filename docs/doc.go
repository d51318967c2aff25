// Package docs owns kiln's reference pages (the Markdown files in this
// folder) and the generator of the command-line ones: docs/cli.md and the
// man pages packaging/man/kiln.1 and packaging/man/kilnd.8 are rendered from
// one model of each command line (kong's model of cmd/kiln's CLI struct, and
// the flag definitions in cmd/kilnd/main.go, read from its source) plus the
// hand-written prose in docs/man/*.md. `go generate ./cmd/kiln` writes them;
// a test in cmd/kiln fails when the committed files differ from what the
// code would render.
//
// The tests here keep the other pages true to the code: every key of the
// pipeline spec and of kiln.yaml (by reflection over daemon/config's yaml
// tags) must have a row in pipeline-spec.md or operations.md, every
// Prometheus metric kiln declares one in metrics.md, and no row may name a
// key or metric that does not exist.
package docs
