package ocitar

import (
	"archive/tar"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestArchives(t *testing.T) {
	img, err := Build(Spec{Files: []File{{Path: "/bin/x", Mode: 0o755, Data: []byte("x")}}, Cmd: []string{"/bin/x"}, User: "1000:1000"})
	if err != nil {
		t.Fatal(err)
	}
	again, _ := Build(Spec{Files: []File{{Path: "/bin/x", Mode: 0o755, Data: []byte("x")}}, Cmd: []string{"/bin/x"}, User: "1000:1000"})
	d1, _ := Digest(img)
	d2, _ := Digest(again)
	if d1 != d2 {
		t.Errorf("digests %s and %s for the same spec", d1, d2)
	}
	dir := t.TempDir()
	oci, docker := filepath.Join(dir, "oci.tar"), filepath.Join(dir, "docker.tar")
	if err := WriteOCI(oci, "kiln.local/x:1", img); err != nil {
		t.Fatal(err)
	}
	if err := WriteDocker(docker, "kiln.local/x:1", img); err != nil {
		t.Fatal(err)
	}
	names := tarNames(t, oci)
	for _, want := range []string{"oci-layout", "index.json", "blobs/sha256/" + d1[len("sha256:"):]} {
		if !slices.Contains(names, want) {
			t.Errorf("OCI archive lacks %s: %v", want, names)
		}
	}
	if !slices.Contains(tarNames(t, docker), "manifest.json") {
		t.Errorf("docker archive lacks manifest.json")
	}
	var index struct {
		Manifests []struct {
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(tarFile(t, oci, "index.json"), &index); err != nil || index.Manifests[0].Annotations["io.containerd.image.name"] != "kiln.local/x:1" {
		t.Errorf("index.json = %+v, %v; want the image name annotation", index, err)
	}
}

func tarNames(t *testing.T, file string) []string {
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h.Name)
	}
}

func tarFile(t *testing.T, file, name string) []byte {
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s not in %s", name, file)
		}
		if h.Name == name {
			b, _ := io.ReadAll(tr)
			return b
		}
	}
}
