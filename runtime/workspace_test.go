package runtime

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// TestPrepareWorkspaceContentType: inputdataconfig.json names each channel's
// data as SageMaker does, text/csv unless the spec says otherwise.
func TestPrepareWorkspaceContentType(t *testing.T) {
	for _, tc := range []struct{ set, want string }{{"", "text/csv"}, {"application/x-image", "application/x-image"}} {
		dir := t.TempDir()
		ch := filepath.Join(dir, "data")
		if err := os.Mkdir(ch, 0o755); err != nil {
			t.Fatal(err)
		}
		s := &TrainSpec{Workspace: filepath.Join(dir, "ws"), Channels: map[string]string{"train": ch}, ContentType: tc.set}
		if err := PrepareWorkspace(s); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(s.configDir(), "inputdataconfig.json"))
		if err != nil {
			t.Fatal(err)
		}
		var idc map[string]map[string]string
		if err := json.Unmarshal(b, &idc); err != nil {
			t.Fatal(err)
		}
		if got := idc["train"]["ContentType"]; got != tc.want {
			t.Errorf("ContentType %q set: inputdataconfig.json says %q; want %q", tc.set, got, tc.want)
		}
	}
}
