package gpu

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakeSpec is shaped like nvidia-ctk's output, cut to what CDI validates.
func fakeSpec(names ...string) string {
	var b strings.Builder
	b.WriteString("cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n")
	for _, n := range names {
		b.WriteString("- name: \"" + n + "\"\n  containerEdits:\n    deviceNodes:\n    - path: /dev/nvidia0\n")
	}
	b.WriteString("containerEdits:\n  env:\n  - NVIDIA_VISIBLE_DEVICES=void\n")
	return b.String()
}

func TestCheckCDI(t *testing.T) {
	three := Snapshot{Available: true}
	for i := range 3 {
		d := dev(i, 0, 0, gi)
		d.CDINames = gpuCDINames(d)
		three.Devices = append(three.Devices, d)
	}
	lost := three.clone()
	lost.Devices[2].Health = Health{Lost: true, Reason: "lost (ERROR_GPU_IS_LOST)"}
	mig := three.clone()
	mig.Devices[2].MIG = MIG{Enabled: true, Devices: []MIGDevice{{Index: 0, UUID: "MIG-x"}, {Index: 1, UUID: "MIG-y"}}}

	tests := []struct {
		name    string
		snap    Snapshot
		files   map[string]string
		want    []string
		wantErr bool
	}{
		{name: "CPU-only needs no spec", snap: Snapshot{Reason: ReasonNoDriver}},
		{name: "no spec at all", snap: three, want: []string{"nvidia.com/gpu=0", "nvidia.com/gpu=1", "nvidia.com/gpu=2"}, wantErr: true},
		{name: "index and uuid names both count", snap: three,
			files: map[string]string{"nvidia.yaml": fakeSpec("0", "GPU-b", "all")},
			want:  []string{"nvidia.com/gpu=2"}, wantErr: true},
		{name: "a lost GPU needs no name", snap: lost, files: map[string]string{"nvidia.yaml": fakeSpec("0", "1")}},
		{name: "all named", snap: three, files: map[string]string{"nvidia.yaml": fakeSpec("0", "1", "2", "all")}},
		{name: "MIG devices are checked instead of their GPU", snap: mig,
			files: map[string]string{"nvidia.yaml": fakeSpec("0", "1", "2:0")},
			want:  []string{"nvidia.com/gpu=2:1"}, wantErr: true},
		{name: "a broken spec is reported", snap: three,
			files: map[string]string{"nvidia.yaml": fakeSpec("0", "1"), "broken.json": "{"},
			want:  []string{"nvidia.com/gpu=2"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, body := range tt.files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := CheckCDI(tt.snap, []string{dir})
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("CheckCDI() missing mismatch (-want +got):\n%s", diff)
			}
			if (err != nil) != tt.wantErr {
				t.Fatalf("CheckCDI() error = %v, want error %v", err, tt.wantErr)
			}
			if err == nil {
				return
			}
			var ce *CDIError
			if !errors.As(err, &ce) {
				t.Fatalf("CheckCDI() error is %T, want *CDIError", err)
			}
			if !strings.HasSuffix(err.Error(), "; "+CDIFix) {
				t.Errorf("CheckCDI() error = %q, want the fix %q at the end", err, CDIFix)
			}
			if _, broken := tt.files["broken.json"]; broken && !strings.Contains(err.Error(), "broken.json unreadable") {
				t.Errorf("CheckCDI() error = %q, want it to name broken.json", err)
			}
		})
	}
}
