package config

import (
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"time"
)

// Daemon is kiln.yaml, kilnd's own settings. Each key is documented in default.yaml, which is
// also the file packaging installs; a test keeps the two in step.
type Daemon struct {
	Containerd       ContainerdConfig `yaml:"containerd" json:"containerd"`
	Groups           GroupsConfig     `yaml:"groups" json:"groups"`
	ShutdownTimeout  Duration         `yaml:"shutdown_timeout" json:"shutdown_timeout"`
	StoreLockTimeout Duration         `yaml:"store_lock_timeout" json:"store_lock_timeout"`
	Metrics          MetricsConfig    `yaml:"metrics" json:"metrics"`
	Disk             DiskConfig       `yaml:"disk" json:"disk"`
	GPU              GPUConfig        `yaml:"gpu" json:"gpu"`
	GC               GCConfig         `yaml:"gc" json:"gc"`
	LogLevel         string           `yaml:"log_level" json:"log_level"`

	// Paths is not read from the file: it comes from --root and --run-dir.
	Paths Paths `yaml:"-" json:"paths"`
}

// ContainerdConfig is how kilnd reaches containerd.
type ContainerdConfig struct {
	Address   string `yaml:"address" json:"address"`
	Namespace string `yaml:"namespace" json:"namespace"`
}

// GroupsConfig names the unix groups the local API authorizes by.
type GroupsConfig struct {
	Read  string `yaml:"read" json:"read"`
	Admin string `yaml:"admin" json:"admin"`
}

// MetricsConfig is the optional Prometheus listener.
type MetricsConfig struct {
	Listen string `yaml:"listen" json:"listen,omitempty"`
}

// DiskConfig guards the state dir's free space.
type DiskConfig struct {
	MinFree Bytes `yaml:"min_free" json:"min_free"`
}

// GPUConfig tunes NVML sampling and CDI.
type GPUConfig struct {
	SampleInterval Duration `yaml:"sample_interval" json:"sample_interval"`
	CDIDirs        []string `yaml:"cdi_dirs" json:"cdi_dirs"`
}

// GCConfig is the store's garbage collection: what retention leaves behind
// (pruned models' files, unreferenced blobs) and what expires by age.
type GCConfig struct {
	Interval      Duration `yaml:"interval" json:"interval"`
	QuarantineAge Duration `yaml:"quarantine_age" json:"quarantine_age"`
	RunLogAge     Duration `yaml:"run_log_age" json:"run_log_age"`
}

//go:embed default.yaml
var defaultDaemonYAML []byte

// DefaultDaemonYAML is the commented default kiln.yaml: what kilnd runs with when there is no
// file, and what packaging installs.
func DefaultDaemonYAML() []byte { return append([]byte(nil), defaultDaemonYAML...) }

func defaultDaemon() Daemon {
	return Daemon{
		Containerd:       ContainerdConfig{Address: "/run/containerd/containerd.sock", Namespace: "kiln"},
		Groups:           GroupsConfig{Read: "kiln", Admin: "kiln-admin"},
		ShutdownTimeout:  D(30 * time.Second),
		StoreLockTimeout: D(2 * time.Second),
		Disk:             DiskConfig{MinFree: GiB},
		GPU:              GPUConfig{SampleInterval: D(10 * time.Second), CDIDirs: []string{"/etc/cdi", "/var/run/cdi"}},
		GC:               GCConfig{Interval: D(time.Hour), QuarantineAge: D(30 * 24 * time.Hour), RunLogAge: D(30 * 24 * time.Hour)},
		LogLevel:         "info",
	}
}

// LoadDaemon reads paths.ConfigFile, or the embedded default when it does not exist (a root
// made for a test or a demo has none), decodes it strictly over the defaults and validates it.
func LoadDaemon(paths Paths) (*Daemon, error) {
	file := paths.ConfigFile
	data, err := os.ReadFile(file)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		file, data = "default kiln.yaml (built in)", defaultDaemonYAML
	case err != nil:
		return nil, fmt.Errorf("read config: %w", err)
	}
	d, err := ParseDaemon(file, data)
	if err != nil {
		return nil, err
	}
	d.Paths = paths
	return d, nil
}

// ParseDaemon decodes and validates kiln.yaml's bytes; file names it in errors.
func ParseDaemon(file string, data []byte) (*Daemon, error) {
	d := defaultDaemon()
	// Every key is optional, so a kiln.yaml whose keys are all commented out
	// (or left empty by a package install) means the defaults.
	if emptyDocument(data) {
		return &d, d.Validate()
	}
	root, err := decodeFile(file, data, &d)
	if root == nil {
		return nil, err
	}
	if err := fileErrors(file, root, err, d.Validate()); err != nil {
		return nil, err
	}
	return &d, nil
}

// containerd's own rule for namespace names.
var namespaceRE = regexp.MustCompile(`^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$`)

// groupRE is what useradd/groupadd accept on Debian by default.
var groupRE = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)

var logLevels = map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError}

// Validate checks the settings and returns every problem, each a *FieldError.
func (d *Daemon) Validate() error {
	c := &checker{}
	if !filepath.IsAbs(d.Containerd.Address) {
		c.failf("containerd.address", "%q is not an absolute socket path", d.Containerd.Address)
	}
	if !namespaceRE.MatchString(d.Containerd.Namespace) {
		c.failf("containerd.namespace", "%q is not a containerd namespace (letters, digits and . _ - between them)", d.Containerd.Namespace)
	}
	if !groupRE.MatchString(d.Groups.Read) {
		c.failf("groups.read", "%q is not a group name", d.Groups.Read)
	}
	if !groupRE.MatchString(d.Groups.Admin) {
		c.failf("groups.admin", "%q is not a group name", d.Groups.Admin)
	}
	if d.ShutdownTimeout.Duration <= 0 {
		c.failf("shutdown_timeout", "must be above 0")
	}
	if d.StoreLockTimeout.Duration <= 0 {
		c.failf("store_lock_timeout", "must be above 0")
	}
	if d.Metrics.Listen != "" {
		if err := checkHostPort(d.Metrics.Listen); err != nil {
			c.failf("metrics.listen", "%v", err)
		}
	}
	if d.Disk.MinFree < 0 {
		c.failf("disk.min_free", "must not be negative")
	}
	if d.GPU.SampleInterval.Duration < 100*time.Millisecond {
		c.failf("gpu.sample_interval", "%s is too short (want at least 100ms)", d.GPU.SampleInterval)
	}
	for i, dir := range d.GPU.CDIDirs {
		if !filepath.IsAbs(dir) {
			c.failf(fmt.Sprintf("gpu.cdi_dirs[%d]", i), "%q is not an absolute path", dir)
		}
	}
	if d.GC.Interval.Duration < time.Minute {
		c.failf("gc.interval", "%s is too short (want at least 1m)", d.GC.Interval)
	}
	if d.GC.QuarantineAge.Duration < 0 {
		c.failf("gc.quarantine_age", "must not be negative (0 keeps quarantined batches forever)")
	}
	if d.GC.RunLogAge.Duration < 0 {
		c.failf("gc.run_log_age", "must not be negative (0 keeps run logs forever)")
	}
	if _, ok := logLevels[d.LogLevel]; !ok {
		c.oneOf("log_level", d.LogLevel, "debug", "info", "warn", "error")
	}
	return c.result()
}

// SlogLevel is LogLevel for log/slog.
func (d *Daemon) SlogLevel() slog.Level { return logLevels[d.LogLevel] }
