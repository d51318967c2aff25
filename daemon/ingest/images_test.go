package ingest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/kiln-edge/kiln/storage"
)

// solid is a w x h image of one color.
func solid(w, h int, c color.NRGBA) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.SetNRGBA(x, y, c)
		}
	}
	return img
}

func pngBytes(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func jpegBytes(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// distinctPNG is a small PNG whose bytes differ for every i (one pixel encodes it), around
// a base brightness.
func distinctPNG(t testing.TB, i int, base uint8) []byte {
	img := solid(4, 4, color.NRGBA{base, base, base, 255})
	img.SetNRGBA(0, 0, color.NRGBA{uint8(i), uint8(i >> 8), 7, 255})
	return pngBytes(t, img)
}

// dropBatch writes files (path inside the batch -> content) into drop/<p>/<name>/ and closes
// the batch with _SUCCESS.
func dropBatch(t testing.TB, dir, name string, files map[string][]byte) {
	t.Helper()
	b := filepath.Join(dir, name)
	for rel, content := range files {
		p := filepath.Join(b, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, content, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(b, SuccessMarker), nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// wantHoldout is the split rule written out: xxh64 of the bytes as a fraction of 2^64.
func wantHoldout(content []byte, seed uint64, fraction float64) bool {
	return float64(xxh64(content, seed))/math.Pow(2, 64) < fraction
}

// TestImageFolderBatch: a class-per-folder batch of PNG and JPEG images becomes one accepted
// images version: every image in Files with its folder's class and its part by the content
// hash, the parts counted in the manifest, rows = images, the drop folder emptied.
func TestImageFolderBatch(t *testing.T) {
	e := newEnv(t, spec(t, "p", "format: images\nsettle: 0s\nvalidate: {labels: [cat, dog], min_per_class: 5}\n"))
	files := map[string][]byte{}
	for i := range 40 {
		class := []string{"cat", "dog"}[i%2]
		files[fmt.Sprintf("%s/%03d.png", class, i)] = distinctPNG(t, i, 100)
	}
	files["dog/photo.JPG"] = jpegBytes(t, solid(8, 8, color.NRGBA{200, 10, 10, 255}))
	dropBatch(t, e.drop("p"), "b1", files)
	d := e.nth("p", 1)
	if d.State != storage.DatasetAccepted {
		t.Fatalf("%s is %s: %s", d.ID, d.State, d.Reason)
	}
	if d.Format != storage.FormatImages || d.Rows != 41 || d.Train != nil || d.Holdout != nil {
		t.Errorf("dataset = format %q rows %d train %v holdout %v; want images, 41, no part blobs", d.Format, d.Rows, d.Train, d.Holdout)
	}
	var train, holdout int64
	for _, f := range DataFiles(d) {
		content, ok := files[f.Path]
		if !ok {
			t.Errorf("Files has %q, not a dropped file", f.Path)
			continue
		}
		if want, _, _ := strings.Cut(f.Path, "/"); f.Label != want {
			t.Errorf("%s: label %q, want %q", f.Path, f.Label, want)
		}
		if want := wantHoldout(content, 1, 0.2); f.Holdout != want {
			t.Errorf("%s: holdout %v, want %v (xxh64 of its bytes, seed 1, fraction 0.2)", f.Path, f.Holdout, want)
		}
		if e.blob(&f.Blob) != string(content) {
			t.Errorf("%s: stored blob differs from the dropped bytes", f.Path)
		}
		if f.Holdout {
			holdout++
		} else {
			train++
		}
	}
	if train+holdout != 41 || holdout == 0 || train == 0 {
		t.Errorf("train %d, holdout %d: want 41 images on both sides", train, holdout)
	}
	if !d.HasTrainPart() || !d.HasHoldoutPart() {
		t.Errorf("HasTrainPart %v, HasHoldoutPart %v; want both", d.HasTrainPart(), d.HasHoldoutPart())
	}
	m := e.meta(d)
	if m.Manifest.Format != "images" || m.Manifest.Classes["cat"] != 20 || m.Manifest.Classes["dog"] != 21 {
		t.Errorf("manifest format %q classes %v", m.Manifest.Format, m.Manifest.Classes)
	}
	parts := map[string]int64{}
	for _, p := range m.Manifest.Parts {
		parts[p.Name] = p.Rows
	}
	if parts["train"] != train || parts["holdout"] != holdout {
		t.Errorf("manifest parts %v, want train %d holdout %d", parts, train, holdout)
	}
	if p := m.Manifest.Profile["mean_r"]; p.Values != 41 {
		t.Errorf("profile mean_r has %d values, want 41", p.Values)
	}
	ev := e.eventFor("dataset.accepted", d.ID)
	if ev.Details["train_rows"] != fmt.Sprint(train) || ev.Details["rows"] != "41" {
		t.Errorf("event details %v", ev.Details)
	}
	e.waitFor("drop folder emptied", 5*time.Second, func() bool { return len(entries(t, e.drop("p"))) == 0 })
}

// TestLabelsCSVBatch: images anywhere plus labels.csv; labels.csv is kept with no label.
func TestLabelsCSVBatch(t *testing.T) {
	e := newEnv(t, spec(t, "p", "format: images\nsettle: 0s\n"))
	files := map[string][]byte{
		"imgs/a.png":     distinctPNG(t, 1, 10),
		"imgs/sub/b.png": distinctPNG(t, 2, 10),
		"c.jpeg":         jpegBytes(t, solid(8, 8, color.NRGBA{1, 2, 3, 255})),
		"labels.csv":     []byte("\uFEFFpath,label\r\nimgs/a.png,cat\r\n./imgs/sub/b.png,dog\r\nc.jpeg,\"cat\"\r\n"),
	}
	dropBatch(t, e.drop("p"), "b1", files)
	d := e.nth("p", 1)
	if d.State != storage.DatasetAccepted {
		t.Fatalf("%s is %s: %s", d.ID, d.State, d.Reason)
	}
	want := map[string]string{"imgs/a.png": "cat", "imgs/sub/b.png": "dog", "c.jpeg": "cat", "labels.csv": ""}
	got := map[string]string{}
	for _, f := range DataFiles(d) {
		got[f.Path] = f.Label
	}
	if fmt.Sprint(got) != fmt.Sprint(want) || d.Rows != 3 {
		t.Errorf("labels %v rows %d, want %v and 3", got, d.Rows, want)
	}
}

// TestImageBatchQuarantined: each broken batch is quarantined with its rule, and REASON.json
// names the file at fault as batch/path.
func TestImageBatchQuarantined(t *testing.T) {
	good := func(i int) []byte { return distinctPNG(t, i, 50) }
	corrupt := good(99)
	corrupt = corrupt[:len(corrupt)/2]
	for _, tc := range []struct {
		name, data string
		files      map[string][]byte
		rule, file string
		observed   string
	}{
		{"corrupt png", "", map[string][]byte{"cat/1.png": good(1), "cat/bad.png": corrupt}, RuleImageDecode, "b1/cat/bad.png", "not a decodable png: "},
		{"jpeg named png", "", map[string][]byte{"cat/1.png": jpegBytes(t, solid(4, 4, color.NRGBA{1, 1, 1, 255}))}, RuleImageDecode, "b1/cat/1.png", "not a decodable png: png: invalid format"},
		{"label outside the set", "validate: {labels: [cat, dog]}\n", map[string][]byte{"cat/1.png": good(1), "bird/2.png": good(2)}, "labels", "b1/bird/2.png", `"bird"`},
		{"min per class", "validate: {min_per_class: 2}\n", map[string][]byte{"cat/1.png": good(1), "cat/2.png": good(2), "dog/3.png": good(3)}, RuleMinPerClass, "", `class "dog" has 1 images`},
		{"image at the top", "", map[string][]byte{"cat/1.png": good(1), "2.png": good(2)}, RuleImageLayout, "b1/2.png", "an image at the top of the batch"},
		{"extension", "", map[string][]byte{"cat/1.png": good(1), "cat/notes.txt": []byte("hi")}, "files.extensions", "b1/cat/notes.txt", `".txt"`},
		{"not in labels.csv", "", map[string][]byte{"a.png": good(1), "b.png": good(2), "labels.csv": []byte("path,label\na.png,cat\n")}, RuleLabelsCSV, "b1/b.png", "not listed in labels.csv"},
		{"labels.csv names a missing file", "", map[string][]byte{"a.png": good(1), "labels.csv": []byte("path,label\na.png,cat\nzz.png,dog\n")}, RuleLabelsCSV, "b1/labels.csv", `"zz.png": no such file in the batch`},
		{"labels.csv header", "", map[string][]byte{"a.png": good(1), "labels.csv": []byte("file,class\na.png,cat\n")}, RuleLabelsCSV, "b1/labels.csv", `the header "file,class"`},
		{"class in labels.csv is not a folder name", "", map[string][]byte{"a.png": good(1), "labels.csv": []byte("path,label\na.png,../up\n")}, RuleLabelsCSV, "b1/labels.csv", `the class "../up"`},
		{"class folder with a newline", "", map[string][]byte{"ca\nt/1.png": good(1)}, RuleImageLayout, "b1/ca\nt/1.png", `the class folder "ca\nt"`},
		{"max count", "validate: {files: {max_count: 1}}\n", map[string][]byte{"cat/1.png": good(1), "cat/2.png": good(2)}, "files.max_count", "", "2 files"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, spec(t, "p", "format: images\nsettle: 0s\n"+tc.data))
			dropBatch(t, e.drop("p"), "b1", tc.files)
			d := e.nth("p", 1)
			if d.State != storage.DatasetQuarantined || d.Format != storage.FormatImages {
				t.Fatalf("%s is %s (format %q), want quarantined images", d.ID, d.State, d.Format)
			}
			r := e.reason(d)
			if r.Rule != tc.rule || r.File != tc.file || !strings.Contains(r.Observed, tc.observed) || !r.Read {
				t.Errorf("REASON.json rule %q file %q observed %q read %v; want %q, %q, containing %q, read", r.Rule, r.File, r.Observed, r.Read, tc.rule, tc.file, tc.observed)
			}
			if tc.file != "" && !strings.Contains(r.Message, quoteName(tc.file)) {
				t.Errorf("message %q does not name %s", r.Message, tc.file)
			}
			if _, err := os.Stat(filepath.Join(e.quarantine("p"), strings.TrimPrefix(d.ID, "p/"), "b1")); err != nil {
				t.Errorf("batch not moved beside REASON.json: %v", err)
			}
		})
	}
}

// TestLooseImageQuarantined: an image dropped at the top of drop/<p>/ is not a batch.
func TestLooseImageQuarantined(t *testing.T) {
	e := newEnv(t, spec(t, "p", "format: images\nsettle: 0s\n"))
	renameIn(t, e.drop("p"), "cat.png", string(distinctPNG(t, 1, 1)))
	d := e.nth("p", 1)
	r := e.reason(d)
	if d.State != storage.DatasetQuarantined || d.Format != "images" || r.Rule != RuleImageLayout || r.File != "cat.png" ||
		!strings.Contains(r.Allowed, "batch folder closed by _SUCCESS") || r.Read {
		t.Errorf("dataset %+v reason %+v; want quarantined unread, image_layout, naming cat.png", d, r)
	}
	e.waitFor("drop folder emptied", 5*time.Second, func() bool { return len(entries(t, e.drop("p"))) == 0 })
}

// TestImageFeedback: a labelled image batch in feedback/<p>/ is a feedback version of type
// rows, split like data.
func TestImageFeedback(t *testing.T) {
	e := newEnv(t, spec(t, "p", "format: images\nsettle: 0s\nvalidate: {min_per_class: 10}\n"))
	dropBatch(t, e.feedback("p"), "f1", map[string][]byte{"cat/1.png": distinctPNG(t, 1, 9)})
	d := e.nth("p", 1)
	if d.State != storage.DatasetAccepted || d.Kind != storage.KindFeedback || d.Feedback != storage.FeedbackRows || d.Format != "images" {
		t.Fatalf("feedback dataset %+v; want accepted feedback rows images (min_per_class is a data batch rule)", d)
	}
	if f := DataFiles(d); len(f) != 1 || f[0].Label != "cat" {
		t.Errorf("files %+v", f)
	}
}

// TestImageDrift: a batch of much brighter images than the accepted ones is quarantined by
// drift on the per-channel statistics; one like them is accepted.
func TestImageDrift(t *testing.T) {
	e := newEnv(t, spec(t, "p", "format: images\nsettle: 0s\nvalidate: {drift: {psi_max: 0.25}}\n"))
	// Each image is noise around base: its mean and spread vary a little from image to image.
	noisy := func(seed uint64, base uint8) []byte {
		img := image.NewNRGBA(image.Rect(0, 0, 8, 8))
		for i := 0; i < len(img.Pix); i += 4 {
			for c := range 3 {
				img.Pix[i+c] = base + uint8(xxh64([]byte{byte(i), byte(c)}, seed)%24)
			}
			img.Pix[i+3] = 255
		}
		return pngBytes(t, img)
	}
	batch := func(name string, from int, base uint8) {
		files := map[string][]byte{}
		for i := range 60 {
			files[fmt.Sprintf("c%d/%d.png", i%2, i)] = noisy(uint64(from+i), base)
		}
		dropBatch(t, e.drop("p"), name, files)
	}
	batch("b1", 0, 40)
	if d := e.nth("p", 1); d.State != storage.DatasetAccepted {
		t.Fatalf("first batch %s: %s", d.State, d.Reason)
	}
	batch("b2", 1000, 40)
	if d := e.nth("p", 2); d.State != storage.DatasetAccepted {
		t.Fatalf("a batch like the first: %s: %s", d.State, d.Reason)
	}
	batch("b3", 2000, 200)
	d := e.nth("p", 3)
	if d.State != storage.DatasetQuarantined {
		t.Fatalf("bright batch %s, want quarantined by drift", d.State)
	}
	m := e.meta(d)
	v := m.Report.Violations[0]
	if v.Rule != "drift" || !strings.HasPrefix(v.Column, "mean_") && !strings.HasPrefix(v.Column, "std_") {
		t.Errorf("violation %+v, want drift on a channel statistic", v)
	}
	if len(m.Report.Drift) != 6 {
		t.Errorf("drift measured on %v, want the six statistics", m.Report.Drift)
	}
}

// TestImageStats: the drift statistics of known images.
func TestImageStats(t *testing.T) {
	near := func(a, b [6]float64, tol float64) bool {
		for i := range a {
			if math.Abs(a[i]-b[i]) > tol {
				return false
			}
		}
		return true
	}
	half := solid(4, 2, color.NRGBA{0, 0, 0, 255})
	for x := range 4 {
		half.SetNRGBA(x, 1, color.NRGBA{255, 255, 255, 255})
	}
	gray := image.NewGray(image.Rect(0, 0, 3, 3))
	for i := range gray.Pix {
		gray.Pix[i] = 77
	}
	for _, tc := range []struct {
		name string
		img  image.Image
		want [6]float64
		tol  float64
	}{
		{"solid color", solid(5, 3, color.NRGBA{10, 20, 30, 255}), [6]float64{10, 20, 30, 0, 0, 0}, 0},
		{"half black half white", half, [6]float64{127.5, 127.5, 127.5, 127.5, 127.5, 127.5}, 1e-9},
		{"gray", gray, [6]float64{77, 77, 77, 0, 0, 0}, 0},
		{"offset bounds", solid(5, 3, color.NRGBA{9, 8, 7, 255}).SubImage(image.Rect(1, 1, 3, 3)), [6]float64{9, 8, 7, 0, 0, 0}, 0},
	} {
		if got := imageStats(tc.img); !near(got, tc.want, tc.tol) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	// Through the codecs: a PNG decodes exactly, a JPEG (YCbCr) to within its rounding.
	for _, tc := range []struct {
		ext  string
		data []byte
		tol  float64
	}{
		{".png", pngBytes(t, solid(16, 16, color.NRGBA{200, 100, 50, 255})), 0},
		{".jpg", jpegBytes(t, solid(16, 16, color.NRGBA{200, 100, 50, 255})), 3},
	} {
		img, _, err := decodeImage(tc.ext, tc.data)
		if err != nil {
			t.Fatal(err)
		}
		if got := imageStats(img); !near(got, [6]float64{200, 100, 50, 0, 0, 0}, tc.tol) {
			t.Errorf("%s: %v, want mean 200 100 50, std 0", tc.ext, got)
		}
	}
	// A header declaring a huge picture is refused before decoding.
	huge := pngBytes(t, solid(1, 1, color.NRGBA{}))
	copy(huge[16:24], []byte{0, 0, 0x40, 0, 0, 0, 0x40, 0}) // IHDR width, height 16384
	binary.BigEndian.PutUint32(huge[29:33], crc32.ChecksumIEEE(huge[12:29]))
	if _, _, err := decodeImage(".png", huge); err == nil || !strings.Contains(err.Error(), "16384x16384 pixels is more than 64 megapixels") {
		t.Errorf("decoding a PNG declaring 16384x16384 pixels: %v, want refused by its header", err)
	}
}

// TestFormatRecorded: every version records the format it was read as, one rejected unread
// included.
func TestFormatRecorded(t *testing.T) {
	e := newEnv(t,
		spec(t, "c", "format: csv\nlabel: label\nsettle: 0s\n"),
		spec(t, "j", "format: jsonl\nlabel: label\nsettle: 0s\n"),
		spec(t, "f", "format: files\nsettle: 0s\n"))
	renameIn(t, e.drop("c"), "a.csv", csvRows(5, 0))
	renameIn(t, e.drop("c"), "empty.csv", "")
	renameIn(t, e.drop("j"), "a.jsonl", `{"x": 1, "label": "a"}`+"\n")
	renameIn(t, e.drop("f"), "a.bin", "opaque")
	for p, want := range map[string][]string{"c": {"csv", "csv"}, "j": {"jsonl"}, "f": {"files"}} {
		ds := e.waitDatasets(p, len(want), 5*time.Second)
		for i, d := range ds {
			if d.Format != want[i] {
				t.Errorf("%s (%s): format %q, want %q", d.ID, d.State, d.Format, want[i])
			}
		}
	}
}

// TestBigImage: an image over 1 MiB is read whole (the streaming path is for tabular data)
// and decoded from the bytes that were stored.
func TestBigImage(t *testing.T) {
	e := newEnv(t, spec(t, "p", "format: images\nsettle: 0s\n"))
	img := image.NewNRGBA(image.Rect(0, 0, 640, 640))
	for i := range img.Pix {
		img.Pix[i] = byte(xxh64([]byte{byte(i), byte(i >> 8), byte(i >> 16)}, 3))
	}
	big := pngBytes(t, img)
	if len(big) <= smallFile {
		t.Fatalf("test image is %d bytes, want over %d", len(big), smallFile)
	}
	dropBatch(t, e.drop("p"), "b1", map[string][]byte{"noise/big.png": big})
	d := e.nth("p", 1)
	if d.State != storage.DatasetAccepted {
		t.Fatalf("%s: %s", d.State, d.Reason)
	}
	f := DataFiles(d)
	if len(f) != 1 || f[0].Blob.Size != int64(len(big)) || f[0].Label != "noise" {
		t.Fatalf("files %+v", f)
	}
	want := imageStats(img)
	if got := e.meta(d).Manifest.Profile["std_g"].Sample; len(got) != 1 || got[0] != want[4] {
		t.Errorf("std_g sample %v, want [%v]", got, want[4])
	}
}

// TestImageBatchMemory: a batch keeps a small record per image, never the image: 10,000
// images of 16 KiB each leave well under their 160 MiB on the heap.
func TestImageBatchMemory(t *testing.T) {
	img := image.NewNRGBA(image.Rect(0, 0, 64, 64))
	for i := range img.Pix {
		img.Pix[i] = byte(xxh64([]byte{byte(i), byte(i >> 8)}, 5))
	}
	one := pngBytes(t, img)
	p := spec(t, "p", "format: images\n")
	b := newImageBatch(p, storage.KindData, "b1", nil)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range 10_000 {
		data := bytes.Clone(one) // a fresh buffer each, as copyFile reads them
		if err := b.parseWhole(fmt.Sprintf("c%d/%05d.png", i%10, i), data); err != nil {
			t.Fatal(err)
		}
	}
	classes := b.finish()
	runtime.GC()
	runtime.ReadMemStats(&after)
	if len(b.violations) > 0 || len(classes) != 10 || classes["c3"] != 1000 {
		t.Fatalf("violations %v, classes %v", b.violations, classes)
	}
	grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	if limit := int64(16 << 20); grew > limit {
		t.Errorf("heap grew %d MiB for 10,000 images of %d bytes; want under %d MiB", grew>>20, len(one), limit>>20)
	}
	if len(one)*10_000 < 100<<20 {
		t.Fatalf("test images are %d bytes: too small to tell kept bytes from records", len(one))
	}
}
