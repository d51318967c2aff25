package model

import (
	"bytes"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFeaturesBoxResize: a 4x4 image with a bright top-left quadrant
// box-resizes to 2x2 as [hi lo; lo lo], then standardizes to [√3 -1/√3 ...].
func TestFeaturesBoxResize(t *testing.T) {
	img := image.NewGray(image.Rect(0, 0, 4, 4))
	for y := range 4 {
		for x := range 4 {
			v := uint8(10)
			if x < 2 && y < 2 {
				v = 250
			}
			img.SetGray(x, y, color.Gray{Y: v})
		}
	}
	got := Features(img, 2)
	want := []float64{math.Sqrt(3), -1 / math.Sqrt(3), -1 / math.Sqrt(3), -1 / math.Sqrt(3)}
	for i := range want {
		if math.Abs(got[i]-want[i]) > 1e-9 {
			t.Fatalf("Features = %v; want %v", got, want)
		}
	}
	// Upscaling repeats pixels; a flat image is all zeros.
	if up := Features(img, 8); up[0] <= 0 || up[7] >= 0 || up[63] >= 0 {
		t.Errorf("4x4 -> 8x8: %v", up)
	}
	flat := image.NewGray(image.Rect(3, 3, 9, 9)) // a non-zero origin too
	for _, v := range Features(flat, 3) {
		if v != 0 {
			t.Fatalf("flat image features %v; want zeros", Features(flat, 3))
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	var big bytes.Buffer
	if err := png.Encode(&big, image.NewGray(image.Rect(0, 0, 5000, 4000))); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "empty: want a PNG or JPEG image"},
		{"text", []byte("hello, world"), `not a PNG or JPEG image (starts with "hello, w")`},
		{"png header only", []byte("\x89PNG\r\n\x1a\n"), "not a decodable png: "},
		{"jpeg marker only", []byte{0xff, 0xd8, 0xff}, "not a decodable jpeg: "},
		{"too many pixels", big.Bytes(), "png of 5000x4000 pixels: want at least 1x1 and at most 16777216 pixels"},
	} {
		_, err := Decode(c.data)
		if err == nil || !strings.HasPrefix(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v; want one line starting %q", c.name, err, c.want)
		}
	}
}

func TestTrainPredictCheckLoad(t *testing.T) {
	s := []Sample{{"b", []float64{1, 0}}, {"a", []float64{0, 1}}, {"b", []float64{3, 0}}}
	if _, err := Train(s, 1); err == nil {
		t.Fatal("1x1 model took 2 features")
	}
	m := &Model{Kind: Kind, Size: 1, Classes: []string{"a", "b"}, Centroids: [][]float64{{-1}, {1}}}
	if got := m.PredictFeatures([]float64{0.4}); got != "b" {
		t.Errorf("0.4 -> %s; want b", got)
	}
	if got := m.PredictFeatures([]float64{0}); got != "a" {
		t.Errorf("tie -> %s; want the first class, a", got)
	}
	if m2, err := Train([]Sample{{"z", []float64{2}}, {"y", []float64{4}}, {"z", []float64{4}}}, 1); err != nil ||
		m2.Classes[0] != "y" || m2.Centroids[1][0] != 3 || m2.Counts[1] != 2 {
		t.Errorf("Train = %+v, %v; want classes sorted, z's centroid 3 from 2 images", m2, err)
	}
	dir := t.TempDir()
	for name, bad := range map[string]string{
		"kind":      `{"kind":"x","size":1,"classes":["a"],"centroids":[[0]]}`,
		"size":      `{"kind":"` + Kind + `","size":0,"classes":["a"],"centroids":[[0]]}`,
		"classes":   `{"kind":"` + Kind + `","size":1,"classes":[],"centroids":[]}`,
		"centroids": `{"kind":"` + Kind + `","size":2,"classes":["a"],"centroids":[[0]]}`,
	} {
		p := filepath.Join(dir, name+".json")
		if err := os.WriteFile(p, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(p); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("Load with a bad %s: %v", name, err)
		}
	}
	b, _ := json.Marshal(m)
	p := filepath.Join(dir, "ok.json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err != nil {
		t.Error(err)
	}
}

// opaque hides an image's concrete type, forcing Features' generic path.
type opaque struct{ image.Image }

// TestFeaturesFastPathsMatchAt: the per-type readers give exactly what
// img.At gives, downscaling and upscaling, for each decoded image type.
func TestFeaturesFastPathsMatchAt(t *testing.T) {
	r := image.Rect(1, 2, 41, 32)
	rgba, nrgba, gray := image.NewRGBA(r), image.NewNRGBA(r), image.NewGray(r)
	ycc := image.NewYCbCr(r, image.YCbCrSubsampleRatio420)
	for i := range rgba.Pix {
		rgba.Pix[i] = byte(i * 31)
		nrgba.Pix[i] = byte(i * 17)
	}
	for i := range gray.Pix {
		gray.Pix[i] = byte(i * 13)
	}
	for i := range ycc.Y {
		ycc.Y[i] = byte(i * 7)
	}
	for i := range ycc.Cb {
		ycc.Cb[i], ycc.Cr[i] = byte(i*3), byte(i*5)
	}
	for _, img := range []image.Image{rgba, nrgba, gray, ycc} {
		for _, size := range []int{4, 7, 48} {
			fast, slow := Features(img, size), Features(opaque{img}, size)
			for i := range fast {
				if fast[i] != slow[i] {
					t.Fatalf("%T size %d: feature %d fast %v, through At %v", img, size, i, fast[i], slow[i])
				}
			}
		}
	}
}
