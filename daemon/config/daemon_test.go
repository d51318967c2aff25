package config_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"

	"github.com/kiln-edge/kiln/daemon/config"
)

func TestNewPaths(t *testing.T) {
	tests := []struct {
		name, root, runDir string
		want               config.Paths
	}{
		{"system", "", "", config.Paths{
			Root: "", ConfigDir: "/etc/kiln", ConfigFile: "/etc/kiln/kiln.yaml", PipelinesDir: "/etc/kiln/pipelines",
			StateDir: "/var/lib/kiln", DBFile: "/var/lib/kiln/kiln.db", BlobsDir: "/var/lib/kiln/blobs",
			DropDir: "/var/lib/kiln/drop", FeedbackDir: "/var/lib/kiln/feedback", QuarantineDir: "/var/lib/kiln/quarantine",
			RunsDir: "/var/lib/kiln/runs", ModelsDir: "/var/lib/kiln/models",
			RunDir: "/run/kiln", APISocket: "/run/kiln/kiln.sock", ServeDir: "/run/kiln/serve",
		}},
		{"root", "/tmp/r", "", config.Paths{
			Root: "/tmp/r", ConfigDir: "/tmp/r/etc/kiln", ConfigFile: "/tmp/r/etc/kiln/kiln.yaml", PipelinesDir: "/tmp/r/etc/kiln/pipelines",
			StateDir: "/tmp/r/var/lib/kiln", DBFile: "/tmp/r/var/lib/kiln/kiln.db", BlobsDir: "/tmp/r/var/lib/kiln/blobs",
			DropDir: "/tmp/r/var/lib/kiln/drop", FeedbackDir: "/tmp/r/var/lib/kiln/feedback", QuarantineDir: "/tmp/r/var/lib/kiln/quarantine",
			RunsDir: "/tmp/r/var/lib/kiln/runs", ModelsDir: "/tmp/r/var/lib/kiln/models",
			RunDir: "/tmp/r/run/kiln", APISocket: "/tmp/r/run/kiln/kiln.sock", ServeDir: "/tmp/r/run/kiln/serve",
		}},
		{"root and run dir", "/tmp/r/", "/tmp/s", config.Paths{
			Root: "/tmp/r", ConfigDir: "/tmp/r/etc/kiln", ConfigFile: "/tmp/r/etc/kiln/kiln.yaml", PipelinesDir: "/tmp/r/etc/kiln/pipelines",
			StateDir: "/tmp/r/var/lib/kiln", DBFile: "/tmp/r/var/lib/kiln/kiln.db", BlobsDir: "/tmp/r/var/lib/kiln/blobs",
			DropDir: "/tmp/r/var/lib/kiln/drop", FeedbackDir: "/tmp/r/var/lib/kiln/feedback", QuarantineDir: "/tmp/r/var/lib/kiln/quarantine",
			RunsDir: "/tmp/r/var/lib/kiln/runs", ModelsDir: "/tmp/r/var/lib/kiln/models",
			RunDir: "/tmp/s", APISocket: "/tmp/s/kiln.sock", ServeDir: "/tmp/s/serve",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := config.NewPaths(tt.root, tt.runDir)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("NewPaths(%q, %q) mismatch (-want +got):\n%s", tt.root, tt.runDir, diff)
			}
			if err := got.Check(); err != nil {
				t.Errorf("Check() = %v", err)
			}
		})
	}
	if got, want := config.NewPaths("", "").ServeSocket("pumps"), "/run/kiln/serve/pumps.sock"; got != want {
		t.Errorf("ServeSocket(pumps) = %q, want %q", got, want)
	}
	wd, _ := os.Getwd()
	if got, want := config.NewPaths("rel", "").Root, filepath.Join(wd, "rel"); got != want {
		t.Errorf("NewPaths(rel).Root = %q, want %q", got, want)
	}
}

func TestPathsCheck(t *testing.T) {
	long := "/" + strings.Repeat("d", 100)
	tests := []struct {
		name, root, runDir, want string
	}{
		{"api socket too long", long, "",
			`api socket path "` + long + `/run/kiln/kiln.sock" is 120 bytes; unix sockets allow at most 107 (use --run-dir to move sockets)`},
		{"serve socket too long", "", "/" + strings.Repeat("s", 70),
			`serve socket path "/` + strings.Repeat("s", 70) + `/serve/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.sock" is 115 bytes for a 32-character pipeline name; unix sockets allow at most 107 (use --run-dir to move sockets)`},
		{"run dir fixes a long root", long, "/tmp/k1", ""},
		{"longest that fits", "", "/" + strings.Repeat("s", 62), ""},
		{"one byte too long", "", "/" + strings.Repeat("s", 63),
			`serve socket path "/` + strings.Repeat("s", 63) + `/serve/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.sock" is 108 bytes for a 32-character pipeline name; unix sockets allow at most 107 (use --run-dir to move sockets)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := config.NewPaths(tt.root, tt.runDir).Check()
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Errorf("Check()\n got: %s\nwant: %s", got, tt.want)
			}
		})
	}
}

func wantDefaultDaemon(paths config.Paths) *config.Daemon {
	return &config.Daemon{
		Containerd:       config.ContainerdConfig{Address: "/run/containerd/containerd.sock", Namespace: "kiln"},
		Groups:           config.GroupsConfig{Read: "kiln", Admin: "kiln-admin"},
		ShutdownTimeout:  config.D(30 * time.Second),
		StoreLockTimeout: config.D(2 * time.Second),
		Disk:             config.DiskConfig{MinFree: config.GiB},
		GPU:              config.GPUConfig{SampleInterval: config.D(10 * time.Second), CDIDirs: []string{"/etc/cdi", "/var/run/cdi"}},
		GC:               config.GCConfig{Interval: config.D(time.Hour), QuarantineAge: config.D(720 * time.Hour), RunLogAge: config.D(720 * time.Hour)},
		LogLevel:         "info",
		Paths:            paths,
	}
}

func TestLoadDaemon(t *testing.T) {
	root := t.TempDir()
	paths := config.NewPaths(root, "")

	t.Run("no file is the embedded default", func(t *testing.T) {
		got, err := config.LoadDaemon(paths)
		if err != nil {
			t.Fatalf("LoadDaemon: %v", err)
		}
		if diff := cmp.Diff(wantDefaultDaemon(paths), got); diff != "" {
			t.Errorf("LoadDaemon mismatch (-want +got):\n%s", diff)
		}
	})

	write := func(t *testing.T, body string) {
		t.Helper()
		if err := os.MkdirAll(paths.ConfigDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(paths.ConfigFile, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("partial file keeps the other defaults", func(t *testing.T) {
		write(t, "log_level: debug\ngroups: {admin: ops}\nmetrics: {listen: '127.0.0.1:9464'}\n")
		got, err := config.LoadDaemon(paths)
		if err != nil {
			t.Fatalf("LoadDaemon: %v", err)
		}
		want := wantDefaultDaemon(paths)
		want.LogLevel, want.Groups.Admin, want.Metrics.Listen = "debug", "ops", "127.0.0.1:9464"
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("LoadDaemon mismatch (-want +got):\n%s", diff)
		}
	})

	tests := []struct{ name, body, want string }{
		{"unknown key", "containerd:\n  adress: /x\n", `{file}:2:3: containerd.adress: unknown field (known: address, namespace)`},
		{"bad level", "log_level: loud\n", `{file}:1:12: log_level: "loud" is not one of debug, info, warn, error`},
		{"bad duration", "shutdown_timeout: soon\n", `{file}:1:19: shutdown_timeout: invalid duration "soon" (want e.g. 30s, 10m, 1h)`},
		{"bad size", "disk: {min_free: lots}\n", `{file}:1:18: disk.min_free: invalid size "lots" (want e.g. 512Mi, 2Gi)`},
		{"relative cdi dir", "gpu: {cdi_dirs: [/etc/cdi, cdi]}\n", `{file}:1:28: gpu.cdi_dirs[1]: "cdi" is not an absolute path`},
		{"bad group", "groups: {read: 'Kiln Users'}\n", `{file}:1:16: groups.read: "Kiln Users" is not a group name`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			write(t, tt.body)
			_, err := config.LoadDaemon(paths)
			want := strings.ReplaceAll(tt.want, "{file}", paths.ConfigFile)
			if err == nil || err.Error() != want {
				t.Errorf("LoadDaemon error\n got: %v\nwant: %s", err, want)
			}
		})
	}
}

// The embedded default is also the installed /etc/kiln/kiln.yaml, so it must equal the coded
// defaults and explain every key.
func TestDefaultDaemonYAML(t *testing.T) {
	got, err := config.ParseDaemon("default.yaml", config.DefaultDaemonYAML())
	if err != nil {
		t.Fatalf("ParseDaemon(default): %v", err)
	}
	if diff := cmp.Diff(wantDefaultDaemon(config.Paths{}), got); diff != "" {
		t.Errorf("default.yaml disagrees with the coded defaults (-code +yaml):\n%s", diff)
	}

	var doc yaml.Node
	if err := yaml.Unmarshal(config.DefaultDaemonYAML(), &doc); err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		if n.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, p := n.Content[i], path+k0(path)+n.Content[i].Value
			documented[p] = k.HeadComment != "" || k.LineComment != "" || (i == 0 && path == "" && doc.HeadComment != "")
			walk(n.Content[i+1], p)
		}
	}
	walk(doc.Content[0], "")
	for _, key := range yamlKeys(reflect.TypeFor[config.Daemon](), "") {
		if ok, found := documented[key]; !found {
			t.Errorf("default.yaml lacks key %s", key)
		} else if !ok {
			t.Errorf("default.yaml has no comment on key %s", key)
		}
	}
}

func k0(path string) string {
	if path == "" {
		return ""
	}
	return "."
}

// yamlKeys lists every key path of a config struct.
func yamlKeys(t reflect.Type, path string) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		p := path + k0(path) + name
		out = append(out, p)
		if ft := f.Type; ft.Kind() == reflect.Struct && ft != reflect.TypeFor[config.Duration]() {
			out = append(out, yamlKeys(ft, p)...)
		}
	}
	return out
}

func TestLoadDaemonEmptyFileMeansDefaults(t *testing.T) {
	for _, body := range []string{"", "\n", "# every key commented out\n# log_level: debug\n"} {
		dir := t.TempDir()
		paths := config.NewPaths(dir, "")
		if err := os.MkdirAll(paths.ConfigDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(paths.ConfigFile, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		d, err := config.LoadDaemon(paths)
		if err != nil {
			t.Fatalf("LoadDaemon(%q): %v", body, err)
		}
		if d.Containerd.Namespace != "kiln" || d.ShutdownTimeout.Duration != 30*time.Second {
			t.Errorf("LoadDaemon(%q) = %+v; want the defaults", body, d)
		}
	}
}
