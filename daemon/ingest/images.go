package ingest

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"math"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/kiln-edge/kiln/daemon/config"
	"github.com/kiln-edge/kiln/storage"
)

// LabelsCSV is the file at the top of an images batch that names each image's class, when the
// batch is not laid out one folder per class. It is kept in the version's Files with no label.
const LabelsCSV = "labels.csv"

// Rules of images batches (besides labels, drift and the files rules).
const (
	RuleImageDecode = "image_decode" // not a complete image of its extension's format
	RuleImageLayout = "image_layout" // a loose file, or an image with no class folder
	RuleLabelsCSV   = "labels_csv"   // labels.csv malformed, or not matching the images
	RuleMinPerClass = "min_per_class"
	RuleNoImages    = "images" // a batch with no image in it
)

// maxImagePixels bounds what one image may decode to: a few hundred bytes of PNG can declare
// a picture of billions of pixels, and decoding is where its memory goes.
const maxImagePixels = 64 << 20

// ImageStats are the six numbers drift is measured on for images: the mean and the standard
// deviation of each color channel, 0 to 255. They are a cheap proxy: a change of lighting,
// exposure or camera moves them, a change of what the images show may not.
var ImageStats = []string{"mean_r", "mean_g", "mean_b", "std_r", "std_g", "std_b"}

// imageInfo is what a batch keeps of one image once its bytes are stored: the image itself
// is not kept, so memory stays a few dozen bytes an image however many there are.
type imageInfo struct {
	path    string
	size    int64
	label   string
	holdout bool
	decoded bool
	stats   [6]float64
}

// imageBatch checks an images batch file by file as it is read (see parseWhole), then as a
// whole (finish): layout and classes, the files rules, min_per_class.
type imageBatch struct {
	batch     string // the batch folder's name: reasons name files as batch/path
	labelsCSV bool   // classes come from labels.csv, not from folders
	feedback  bool
	seed      uint64
	fraction  float64
	rules     *config.Validation
	exts      []string

	files    []imageFile // examined by parseAt, not recorded yet (see merge)
	images   []imageInfo
	others   []string          // files of a wrong extension (not decoded)
	listed   map[string]string // labels.csv: path -> class
	listLine map[string]int64

	violations []*Violation
	byRule     map[string]*Violation
}

func newImageBatch(spec *config.Pipeline, kind storage.DatasetKind, batch string, ents []entry) *imageBatch {
	b := &imageBatch{
		batch:    batch,
		feedback: kind == storage.KindFeedback,
		seed:     uint64(spec.Evaluate.Holdout.Seed), //nolint:gosec // the seed's bits, as the rows' split takes them
		rules:    &spec.Data.Validate,
		exts:     config.ImageExtensions,
		byRule:   map[string]*Violation{},
	}
	if spec.Evaluate.Holdout.File == "" {
		b.fraction = spec.Evaluate.Holdout.Fraction
	}
	if f := spec.Data.Validate.Files; f != nil && len(f.Extensions) > 0 {
		b.exts = f.Extensions
	}
	b.labelsCSV = slices.ContainsFunc(ents, func(e entry) bool { return e.rel == LabelsCSV })
	b.files = make([]imageFile, len(ents))
	return b
}

// where names a file of the batch in a reason.
func (b *imageBatch) where(rel string) string { return b.batch + "/" + rel }

// fail records a violation; only the first of each rule is kept, the rest are counted.
func (b *imageBatch) fail(rule, rel string, line int64, observed, allowed string) {
	if v := b.byRule[rule]; v != nil {
		v.Count++
		return
	}
	v := &Violation{Rule: rule, File: b.where(rel), Line: line, Observed: oneLine(observed), Allowed: oneLine(allowed), Count: 1}
	if rel == "" {
		v.File = ""
	}
	b.byRule[rule] = v
	b.violations = append(b.violations, v)
}

// imageFile is what examining one file of the batch found, before it is recorded in the
// batch: files are examined concurrently, then recorded in the batch's file order, so which
// file a reason names never depends on which goroutine finished first.
type imageFile struct {
	examined bool
	labels   []byte // labels.csv's content, parsed when recorded
	other    bool   // a file of another extension: not decoded
	info     imageInfo
	classBad bool // the class folder's name cannot be a class's
	badClass string
	format   string
	err      error // the decoder's
}

// examine hashes, decodes and measures one file of the batch. It reads only what
// newImageBatch set, so any number of files may be examined at once.
func (b *imageBatch) examine(rel string, data []byte) imageFile {
	f := imageFile{examined: true}
	if b.labelsCSV && rel == LabelsCSV {
		f.labels = data
		return f
	}
	ext := strings.ToLower(filepath.Ext(rel))
	if !slices.ContainsFunc(b.exts, func(e string) bool { return strings.EqualFold(e, ext) }) {
		f.other, f.info.path = true, rel
		return f
	}
	f.info = imageInfo{path: rel, size: int64(len(data))}
	f.info.holdout = heldOut(xxh64(data, b.seed), b.fraction)
	if !b.labelsCSV {
		if class, _, ok := strings.Cut(rel, "/"); ok && config.ClassName(class) {
			f.info.label = class
		} else if ok {
			f.badClass, f.classBad = class, true
		}
	}
	img, format, err := decodeImage(ext, data)
	f.format, f.err = format, err
	if err == nil {
		f.info.decoded, f.info.stats = true, imageStats(img)
	}
	return f
}

// record adds an examined file to the batch.
func (b *imageBatch) record(f *imageFile) {
	rel := f.info.path
	switch {
	case f.labels != nil:
		b.parseLabels(f.labels)
		return
	case f.other:
		b.others = append(b.others, rel)
		b.fail("files.extensions", rel, 0, strconv.Quote(filepath.Ext(rel)), strings.Join(b.exts, ", "))
		return
	}
	if f.classBad {
		b.fail(RuleImageLayout, rel, 0, "the class folder "+clipValue(f.badClass), "a folder name with no control characters")
	}
	if f.err != nil {
		b.fail(RuleImageDecode, rel, 0, fmt.Sprintf("not a decodable %s: %v", f.format, f.err), "a complete "+f.format+" image of at most 64 megapixels")
	}
	b.images = append(b.images, f.info)
}

// parseWhole takes one file of the batch from the bytes just stored: labels.csv is parsed,
// an image decoded in full, measured and split by the hash of its bytes.
func (b *imageBatch) parseWhole(rel string, data []byte) error {
	f := b.examine(rel, data)
	b.record(&f)
	return nil
}

// parseAt is parseWhole for the i-th file of the batch, safe to call for different files
// at once; merge records the files in order once all are in.
func (b *imageBatch) parseAt(i int, rel string, data []byte) {
	b.files[i] = b.examine(rel, data)
}

// merge records the files parseAt examined, in the batch's order.
func (b *imageBatch) merge() {
	for i := range b.files {
		if b.files[i].examined {
			b.record(&b.files[i])
		}
	}
	b.files = nil
}

// parse is parseWhole for a caller with a reader (copyFile hands images over whole).
func (b *imageBatch) parse(name string, r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	return b.parseWhole(name, data)
}

// decodeImage decodes data as the format its extension names. The size is read from the
// header first, so an image declaring more than maxImagePixels is refused before decoding.
func decodeImage(ext string, data []byte) (image.Image, string, error) {
	format, decode, decodeCfg := "png", png.Decode, png.DecodeConfig
	if ext == ".jpg" || ext == ".jpeg" {
		format, decode, decodeCfg = "jpeg", jpeg.Decode, jpeg.DecodeConfig
	}
	cfg, err := decodeCfg(bytes.NewReader(data))
	if err != nil {
		return nil, format, err
	}
	if int64(cfg.Width)*int64(cfg.Height) > maxImagePixels {
		return nil, format, fmt.Errorf("%dx%d pixels is more than 64 megapixels", cfg.Width, cfg.Height)
	}
	img, err := decode(bytes.NewReader(data))
	return img, format, err
}

// imageStats is the mean and standard deviation of each channel over every pixel, 0 to 255,
// alpha left aside (colors are taken unpremultiplied). Gray images have r = g = b.
func imageStats(img image.Image) [6]float64 {
	var sum, sq [3]float64
	add := func(r, g, b uint8) {
		for i, v := range [3]float64{float64(r), float64(g), float64(b)} {
			sum[i] += v
			sq[i] += v * v
		}
	}
	bounds := img.Bounds()
	switch im := img.(type) {
	case *image.Gray:
		for y := bounds.Min.Y; y < bounds.Max.Y; y++ {
			for _, v := range im.Pix[im.PixOffset(bounds.Min.X, y):][:bounds.Dx()] {
				add(v, v, v)
			}
		}
	case *image.YCbCr:
		for y := bounds.Min.Y; y < bounds.Max.Y; y++ {
			for x := bounds.Min.X; x < bounds.Max.X; x++ {
				yi, ci := im.YOffset(x, y), im.COffset(x, y)
				add(color.YCbCrToRGB(im.Y[yi], im.Cb[ci], im.Cr[ci]))
			}
		}
	case *image.NRGBA:
		for y := bounds.Min.Y; y < bounds.Max.Y; y++ {
			row := im.Pix[im.PixOffset(bounds.Min.X, y):][:4*bounds.Dx()]
			for i := 0; i < len(row); i += 4 {
				add(row[i], row[i+1], row[i+2])
			}
		}
	default:
		for y := bounds.Min.Y; y < bounds.Max.Y; y++ {
			for x := bounds.Min.X; x < bounds.Max.X; x++ {
				c := color.NRGBAModel.Convert(img.At(x, y)).(color.NRGBA)
				add(c.R, c.G, c.B)
			}
		}
	}
	var out [6]float64
	n := float64(bounds.Dx() * bounds.Dy())
	if n == 0 {
		return out
	}
	for i := range 3 {
		mean := sum[i] / n
		out[i] = mean
		out[3+i] = math.Sqrt(max(0, sq[i]/n-mean*mean))
	}
	return out
}

// parseLabels reads labels.csv: the header path,label, then one row per image.
func (b *imageBatch) parseLabels(data []byte) {
	b.listed, b.listLine = map[string]string{}, map[string]int64{}
	r := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(data, []byte("\uFEFF"))))
	r.FieldsPerRecord = 2
	for first := true; ; first = false {
		rec, err := r.Read()
		line, _ := r.FieldPos(0)
		if errors.Is(err, io.EOF) {
			if first {
				b.fail(RuleLabelsCSV, LabelsCSV, 1, "an empty file", "the header path,label and a row per image")
			}
			return
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				line = pe.Line
			}
			b.fail(RuleLabelsCSV, LabelsCSV, int64(line), err.Error(), "CSV rows path,label")
			return
		}
		if first {
			if rec[0] != "path" || rec[1] != "label" {
				b.fail(RuleLabelsCSV, LabelsCSV, 1, "the header "+clipValue(strings.Join(rec, ",")), "the header path,label")
				return
			}
			continue
		}
		p := path.Clean(strings.TrimPrefix(strings.TrimSpace(rec[0]), "./"))
		label := strings.TrimSpace(rec[1])
		switch {
		case !filepath.IsLocal(p) || p == LabelsCSV:
			b.fail(RuleLabelsCSV, LabelsCSV, int64(line), "the path "+clipValue(rec[0]), "a path to an image inside the batch folder")
		case label == "":
			b.fail(RuleLabelsCSV, LabelsCSV, int64(line), "an empty label for "+clipValue(p), "a class for every image")
		case !config.ClassName(label):
			b.fail(RuleLabelsCSV, LabelsCSV, int64(line), "the class "+clipValue(label), "a class usable as a folder name (no /, no control characters, not . or ..)")
		case b.listLine[p] != 0:
			b.fail(RuleLabelsCSV, LabelsCSV, int64(line), clipValue(p)+" listed again", fmt.Sprintf("one row per image (first at line %d)", b.listLine[p]))
		default:
			b.listed[p], b.listLine[p] = label, int64(line)
		}
	}
}

// finish gives every image its class and runs the batch-wide rules. classes counts the
// images of each class.
func (b *imageBatch) finish() (classes map[string]int64) {
	if b.labelsCSV {
		b.labelsFromCSV()
	}
	allowed := b.rules.Labels
	classes = map[string]int64{}
	for i := range b.images {
		im := &b.images[i]
		switch {
		case im.label == "" && !b.labelsCSV && strings.Contains(im.path, "/"):
			// A class folder of a name no class may have: reported by parseWhole.
		case im.label == "" && !b.labelsCSV:
			b.fail(RuleImageLayout, im.path, 0, "an image at the top of the batch",
				"images in one folder per class (<class>/<image>), or listed in "+LabelsCSV)
		case im.label == "":
			// labels.csv did not list it: reported by labelsFromCSV.
		case len(allowed) > 0 && !slices.Contains(allowed, im.label):
			b.fail("labels", im.path, 0, clipValue(im.label), strings.Join(allowed, ", "))
		}
		if im.label != "" {
			classes[im.label]++
		}
	}
	n := len(b.images) + len(b.others)
	if len(b.images) == 0 {
		b.fail(RuleNoImages, "", 0, "no images", "at least one image ("+strings.Join(b.exts, ", ")+")")
	}
	if f := b.rules.Files; f != nil {
		if f.MaxCount > 0 && n > f.MaxCount {
			b.fail("files.max_count", "", 0, fmt.Sprintf("%d files", n), fmt.Sprintf("at most %d", f.MaxCount))
		}
		if f.MaxSize > 0 {
			for _, im := range b.images {
				if im.size > int64(f.MaxSize) {
					b.fail("files.max_size", im.path, 0, fmt.Sprintf("%d bytes", im.size), fmt.Sprintf("at most %d bytes", int64(f.MaxSize)))
				}
			}
		}
	}
	// Like validate.rows, a batch-size rule: feedback is not held to it.
	if least := b.rules.MinPerClass; least > 0 && !b.feedback {
		for _, c := range sortedKeys(classes) {
			if classes[c] < int64(least) {
				b.fail(RuleMinPerClass, "", 0, fmt.Sprintf("class %s has %d images", clipValue(c), classes[c]), fmt.Sprintf("at least %d per class", least))
			}
		}
	}
	return classes
}

// labelsFromCSV gives each image its labels.csv class and reports images without a row and
// rows without an image.
func (b *imageBatch) labelsFromCSV() {
	if b.listed == nil {
		return // labels.csv itself failed (or was not readable): already reported
	}
	found := map[string]bool{}
	for i := range b.images {
		im := &b.images[i]
		im.label = b.listed[im.path]
		found[im.path] = true
		if im.label == "" {
			b.fail(RuleLabelsCSV, im.path, 0, "not listed in "+LabelsCSV, "a row path,label for every image")
		}
	}
	for _, o := range b.others {
		found[o] = true
	}
	var missing []string
	for p := range b.listed {
		if !found[p] {
			missing = append(missing, p)
		}
	}
	slices.SortFunc(missing, func(x, y string) int { return int(b.listLine[x] - b.listLine[y]) })
	for _, p := range missing {
		b.fail(RuleLabelsCSV, LabelsCSV, b.listLine[p], clipValue(p)+": no such file in the batch", "a row for each image of the batch, no more")
	}
}

// profile is the drift profile of the batch: each of ImageStats as a numeric column over
// the decoded images, sampled at evenly spaced ranks when there are more than sampleSize.
func (b *imageBatch) profile() map[string]ColumnProfile {
	prof := map[string]ColumnProfile{}
	for s, name := range ImageStats {
		var vals []float64
		for _, im := range b.images {
			if im.decoded {
				vals = append(vals, im.stats[s])
			}
		}
		if len(vals) == 0 {
			continue
		}
		slices.Sort(vals)
		sample := vals
		if len(vals) > sampleSize {
			sample = make([]float64, sampleSize)
			for i := range sample {
				sample[i] = vals[i*len(vals)/sampleSize]
			}
		}
		prof[name] = ColumnProfile{Values: int64(len(vals)), Sample: sample}
	}
	return prof
}

// checks lists every rule the batch was held to, passed or not, for the report.
func (b *imageBatch) checks(classes map[string]int64) []Check {
	var out []Check
	add := func(rule, observed, allowed string) {
		c := Check{Rule: rule, OK: b.byRule[rule] == nil, Observed: observed, Allowed: allowed}
		if v := b.byRule[rule]; v != nil {
			c.Observed = v.Observed
		}
		out = append(out, c)
	}
	layout := "one folder per class"
	if b.labelsCSV {
		layout = LabelsCSV
	}
	add(RuleImageLayout, layout, "one folder per class, or "+LabelsCSV)
	if b.labelsCSV {
		add(RuleLabelsCSV, fmt.Sprintf("%d rows", len(b.listed)), "a row path,label for every image")
	}
	add("files.extensions", "", strings.Join(b.exts, ", "))
	add(RuleImageDecode, fmt.Sprintf("%d images", len(b.images)), "complete png and jpeg images")
	add(RuleNoImages, strconv.Itoa(len(b.images)), "at least 1")
	classText := make([]string, 0, len(classes))
	for _, c := range sortedKeys(classes) {
		classText = append(classText, fmt.Sprintf("%s: %d", c, classes[c]))
	}
	if len(b.rules.Labels) > 0 {
		add("labels", strings.Join(classText, ", "), strings.Join(b.rules.Labels, ", "))
	}
	if f := b.rules.Files; f != nil && f.MaxCount > 0 {
		add("files.max_count", strconv.Itoa(len(b.images)+len(b.others)), "at most "+strconv.Itoa(f.MaxCount))
	}
	if f := b.rules.Files; f != nil && f.MaxSize > 0 {
		add("files.max_size", "", fmt.Sprintf("at most %d bytes", int64(f.MaxSize)))
	}
	if least := b.rules.MinPerClass; least > 0 && !b.feedback {
		add(RuleMinPerClass, strings.Join(classText, ", "), fmt.Sprintf("at least %d per class", least))
	}
	return out
}

// imageVersion finishes an images batch into its version: each image's FileRef carries its
// class and part (nothing is stored twice, Train and Holdout stay nil), and the manifest
// lists the parts by their image counts and sizes, with no blob of their own.
func (m *Manager) imageVersion(in commitIn, man *Manifest, rep *Report, d *storage.Dataset) ([]Violation, error) {
	b := in.b.img
	classes := b.finish()
	byPath := make(map[string]*imageInfo, len(b.images))
	for i := range b.images {
		byPath[b.images[i].path] = &b.images[i]
	}
	train, holdout := Part{Name: "train"}, Part{Name: "holdout"}
	for i := range d.Files {
		f := &d.Files[i]
		im := byPath[f.Path]
		if im == nil {
			continue // labels.csv, or a file of another extension
		}
		f.Label, f.Holdout = im.label, im.holdout
		if im.label == "" {
			continue
		}
		p := &train
		if im.holdout {
			p = &holdout
		}
		p.Rows++
		p.Size += im.size
	}
	man.Rows, man.Classes, man.Profile = int64(len(b.images)), classes, b.profile()
	if b.fraction > 0 {
		man.Split = &Split{Fraction: b.fraction, Seed: in.spec.Evaluate.Holdout.Seed}
	}
	for _, p := range []Part{train, holdout} {
		if p.Rows > 0 {
			man.Parts = append(man.Parts, p)
		}
	}
	if in.kind == storage.KindFeedback {
		// A labelled image batch is to images what labelled rows are to tabular data.
		d.Feedback, man.Feedback = storage.FeedbackRows, storage.FeedbackRows
		n := int64(len(b.images))
		rep.Feedback = &FeedbackCounts{Type: storage.FeedbackRows, Read: n, Usable: n}
	}
	rep.Checks = b.checks(classes)
	out := make([]Violation, 0, len(b.violations))
	for _, v := range b.violations {
		out = append(out, *v)
	}
	if in.kind == storage.KindData && len(out) == 0 {
		v, err := m.driftCheck(in.spec, in.pipeline, man.Profile, "", rep)
		if err != nil {
			return nil, err
		}
		if v != nil {
			out = append(out, *v)
		}
	}
	return out, nil
}
