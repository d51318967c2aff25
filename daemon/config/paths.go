package config

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Paths is where kiln keeps everything (DESIGN.md "State on disk"). It is computed once from
// --root and --run-dir and passed down, so no package builds a path of its own.
type Paths struct {
	Root          string `json:"root"`
	ConfigDir     string `json:"config_dir"`
	ConfigFile    string `json:"config_file"`   // ConfigDir/kiln.yaml
	PipelinesDir  string `json:"pipelines_dir"` // ConfigDir/pipelines
	StateDir      string `json:"state_dir"`
	DBFile        string `json:"db_file"`
	BlobsDir      string `json:"blobs_dir"`
	DropDir       string `json:"drop_dir"`
	FeedbackDir   string `json:"feedback_dir"`
	QuarantineDir string `json:"quarantine_dir"`
	RunsDir       string `json:"runs_dir"`
	ModelsDir     string `json:"models_dir"`
	RunDir        string `json:"run_dir"`
	APISocket     string `json:"api_socket"` // RunDir/kiln.sock
	ServeDir      string `json:"serve_dir"`  // RunDir/serve, one <pipeline>.sock each
}

// maxSocketPath is the longest unix socket path: sun_path is 108 bytes with the final NUL.
const maxSocketPath = 107

// NewPaths lays kiln out under root ("" is /) with the sockets in runDir when it is set.
// Relative roots are made absolute, because the paths end up in container mounts and in
// sockets that other processes dial from other working directories.
func NewPaths(root, runDir string) Paths {
	root = absPath(root)
	base := root
	if base == "" {
		base = "/"
	}
	p := Paths{Root: root}
	p.ConfigDir = filepath.Join(base, "etc", "kiln")
	p.ConfigFile = filepath.Join(p.ConfigDir, "kiln.yaml")
	p.PipelinesDir = filepath.Join(p.ConfigDir, "pipelines")
	p.StateDir = filepath.Join(base, "var", "lib", "kiln")
	p.DBFile = filepath.Join(p.StateDir, "kiln.db")
	p.BlobsDir = filepath.Join(p.StateDir, "blobs")
	p.DropDir = filepath.Join(p.StateDir, "drop")
	p.FeedbackDir = filepath.Join(p.StateDir, "feedback")
	p.QuarantineDir = filepath.Join(p.StateDir, "quarantine")
	p.RunsDir = filepath.Join(p.StateDir, "runs")
	p.ModelsDir = filepath.Join(p.StateDir, "models")
	p.RunDir = filepath.Join(base, "run", "kiln")
	if runDir != "" {
		p.RunDir = absPath(runDir)
	}
	p.APISocket = filepath.Join(p.RunDir, "kiln.sock")
	p.ServeDir = filepath.Join(p.RunDir, "serve")
	return p
}

func absPath(p string) string {
	if p == "" {
		return ""
	}
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return filepath.Clean(p)
}

// ServeSocket is the endpoint socket of a pipeline.
func (p Paths) ServeSocket(pipeline string) string {
	return filepath.Join(p.ServeDir, pipeline+".sock")
}

// Check refuses socket paths that do not fit in sun_path. It checks the endpoint socket of the
// longest possible pipeline name, so a pipeline added later cannot fail on its socket alone.
func (p Paths) Check() error {
	if n := len(p.APISocket); n > maxSocketPath {
		return fmt.Errorf("api socket path %q is %d bytes; unix sockets allow at most %d (use --run-dir to move sockets)", p.APISocket, n, maxSocketPath)
	}
	if s := p.ServeSocket(strings.Repeat("x", MaxNameLen)); len(s) > maxSocketPath {
		return fmt.Errorf("serve socket path %q is %d bytes for a %d-character pipeline name; unix sockets allow at most %d (use --run-dir to move sockets)", s, len(s), MaxNameLen, maxSocketPath)
	}
	return nil
}
