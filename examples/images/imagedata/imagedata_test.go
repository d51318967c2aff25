package imagedata_test

import (
	"bytes"
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kiln-edge/kiln/examples/images/imagedata"
	"github.com/kiln-edge/kiln/examples/images/model"
)

func TestWriteLayoutAndDeterminism(t *testing.T) {
	dir := t.TempDir()
	classes := []string{"cat", "dog"}
	files, err := imagedata.Write(dir, classes, 3, 42, imagedata.Options{JPEG: true})
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, f := range files {
		paths = append(paths, f.Path)
		b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(f.Path)))
		if err != nil || !bytes.Equal(b, f.Data) {
			t.Fatalf("%s on disk differs from what Write returned (%v)", f.Path, err)
		}
		img, err := model.Decode(b)
		if err != nil {
			t.Fatalf("%s: %v", f.Path, err)
		}
		if sz := img.Bounds().Size(); sz != image.Pt(32, 32) {
			t.Errorf("%s: %v; want the default 32x32", f.Path, sz)
		}
		if !strings.HasPrefix(f.Path, f.Label+"/") {
			t.Errorf("%s is not under its label %s", f.Path, f.Label)
		}
	}
	want := []string{"cat/0.png", "cat/1.jpg", "cat/2.png", "dog/0.png", "dog/1.jpg", "dog/2.png"}
	if !slices.Equal(paths, want) {
		t.Errorf("paths %v; want %v", paths, want)
	}
	marker := filepath.Join(dir, imagedata.SuccessMarker)
	if _, err := os.Stat(marker); err == nil {
		t.Error("batch closed before Close")
	}
	if err := imagedata.Close(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Error(err)
	}

	again, _ := imagedata.Generate(classes, 3, 42, imagedata.Options{JPEG: true})
	other, _ := imagedata.Generate(classes, 3, 43, imagedata.Options{JPEG: true})
	for i := range files {
		if !bytes.Equal(files[i].Data, again[i].Data) {
			t.Errorf("%s: seed 42 twice gave different bytes", files[i].Path)
		}
		if bytes.Equal(files[i].Data, other[i].Data) {
			t.Errorf("%s: seeds 42 and 43 gave the same bytes", files[i].Path)
		}
	}
	if err := imagedata.Close(filepath.Join(dir, "missing")); err == nil {
		t.Error("Close of a missing folder succeeded")
	}
}

// TestOptions: Gray has r = g = b; Brightness moves the channel means, as
// a lighting change for drift tests should.
func TestOptions(t *testing.T) {
	mean := func(opt imagedata.Options) (r, g, b float64, gray bool) {
		fs, err := imagedata.Generate([]string{"a", "b"}, 5, 1, opt)
		if err != nil {
			t.Fatal(err)
		}
		gray = true
		n := 0.0
		for _, f := range fs {
			img, err := png.Decode(bytes.NewReader(f.Data))
			if err != nil {
				t.Fatal(err)
			}
			bd := img.Bounds()
			for y := bd.Min.Y; y < bd.Max.Y; y++ {
				for x := bd.Min.X; x < bd.Max.X; x++ {
					cr, cg, cb, _ := img.At(x, y).RGBA()
					r, g, b, n = r+float64(cr>>8), g+float64(cg>>8), b+float64(cb>>8), n+1
					gray = gray && cr == cg && cg == cb
				}
			}
		}
		return r / n, g / n, b / n, gray
	}
	r0, g0, b0, gray0 := mean(imagedata.Options{})
	if gray0 {
		t.Error("default images are gray; want tinted colour")
	}
	if _, _, _, gray := mean(imagedata.Options{Gray: true, Size: 12}); !gray {
		t.Error("Gray images have r != g or g != b")
	}
	r1, g1, b1, _ := mean(imagedata.Options{Brightness: 50})
	for i, d := range []float64{r1 - r0, g1 - g0, b1 - b0} {
		if d < 40 || d > 50.5 {
			t.Errorf("channel %d mean moved by %.1f with Brightness 50; want about 50", i, d)
		}
	}
	for _, bad := range []imagedata.Options{{Size: 4}, {Size: 5000}} {
		if _, err := imagedata.Generate([]string{"a"}, 1, 1, bad); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
	if _, err := imagedata.Generate(nil, 1, 1, imagedata.Options{}); err == nil {
		t.Error("no classes: no error")
	}
}

func TestCorrupt(t *testing.T) {
	b := imagedata.Corrupt()
	if !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("corrupt PNG lacks the PNG signature: % x", b[:8])
	}
	if _, err := png.Decode(bytes.NewReader(b)); err == nil {
		t.Fatal("image/png decodes the corrupt PNG")
	}
	if _, err := model.Decode(b); err == nil || !strings.HasPrefix(err.Error(), "not a decodable png: ") {
		t.Errorf("model.Decode: %v; want not a decodable png", err)
	}
	p := filepath.Join(t.TempDir(), "x", "bad.png")
	if err := imagedata.WriteCorrupt(p); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p); !bytes.Equal(got, b) {
		t.Error("WriteCorrupt wrote other bytes than Corrupt")
	}
}

// TestLearnable: the class is learnable from a thumbnail. The example
// model, trained on one seed's images, names another seed's classes, for
// 2 to 8 classes and across sizes and formats.
func TestLearnable(t *testing.T) {
	for _, n := range []int{2, 3, 8} {
		var classes []string
		for i := range n {
			classes = append(classes, fmt.Sprintf("c%d", i))
		}
		m := trainOn(t, classes, 40, 1, imagedata.Options{}, 8)
		hold, err := imagedata.Generate(classes, 25, 2, imagedata.Options{Size: 40, JPEG: true})
		if err != nil {
			t.Fatal(err)
		}
		ok := 0
		for _, f := range hold {
			if y, err := m.Predict(f.Data); err != nil {
				t.Fatal(err)
			} else if y == f.Label {
				ok++
			}
		}
		acc := float64(ok) / float64(len(hold))
		t.Logf("%d classes: holdout accuracy %.3f", n, acc)
		if acc < 0.95 {
			t.Errorf("%d classes: holdout accuracy %.3f; want >= 0.95", n, acc)
		}
	}
}

func trainOn(t *testing.T, classes []string, perClass int, seed int64, opt imagedata.Options, size int) *model.Model {
	t.Helper()
	fs, err := imagedata.Generate(classes, perClass, seed, opt)
	if err != nil {
		t.Fatal(err)
	}
	var s []model.Sample
	for _, f := range fs {
		img, err := model.Decode(f.Data)
		if err != nil {
			t.Fatal(err)
		}
		s = append(s, model.Sample{Label: f.Label, X: model.Features(img, size)})
	}
	m, err := model.Train(s, size)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
