package config

import (
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Data is what lands in drop/<name>/ and how a batch is checked before it becomes a version.
type Data struct {
	// format: csv | jsonl | images (labelled PNG and JPEG images in batch folders, by class
	// folder or labels.csv) | files (opaque files, checked by extension, size and count).
	// Default csv.
	Format string `yaml:"format" json:"format"`
	// label: the label column (csv) or key (jsonl). Required for csv and jsonl; not used for
	// images (the class is the image's folder or its labels.csv row).
	Label string `yaml:"label,omitempty" json:"label,omitempty"`
	// settle: how long a file must be unchanged before it is complete. Default 2s; 0 for
	// writers that rename finished files into place.
	Settle Duration `yaml:"settle" json:"settle"`
	// validate: the checks a batch must pass; a failing batch is quarantined.
	Validate Validation `yaml:"validate" json:"validate"`
	// max_file_size: a file bigger than this is rejected before it is read. Default 1Gi.
	MaxFileSize Bytes `yaml:"max_file_size" json:"max_file_size"`
}

// Validation rules. An unset rule is not checked.
type Validation struct {
	// rows: {min, max} rows per batch (csv, jsonl), files per batch (files). Default min 1,
	// max 0 = no limit.
	Rows RowBounds `yaml:"rows" json:"rows"`
	// max_null_fraction: the largest fraction of empty, null, NaN or inf cells (csv, jsonl).
	MaxNullFraction *float64 `yaml:"max_null_fraction,omitempty" json:"max_null_fraction,omitempty"`
	// max_duplicate_fraction: the largest fraction of rows that repeat another row (csv, jsonl).
	MaxDuplicateFraction *float64 `yaml:"max_duplicate_fraction,omitempty" json:"max_duplicate_fraction,omitempty"`
	// labels: the allowed label values; any other label quarantines the batch (csv, jsonl,
	// images).
	Labels []string `yaml:"labels,omitempty" json:"labels,omitempty"`
	// ranges: per column, the allowed {min, max} of its values (csv, jsonl).
	Ranges map[string]Range `yaml:"ranges,omitempty" json:"ranges,omitempty"`
	// drift: {psi_max}, the largest population stability index of any feature against the
	// live model's data window (csv, jsonl; images: of each per-channel mean and standard
	// deviation).
	Drift *Drift `yaml:"drift,omitempty" json:"drift,omitempty"`
	// files: {extensions, max_size, max_count}, rules for format files and images.
	Files *FileRules `yaml:"files,omitempty" json:"files,omitempty"`
	// min_per_class: the fewest images each class present in a batch must have (images).
	// Default 0: no minimum.
	MinPerClass int `yaml:"min_per_class,omitempty" json:"min_per_class,omitempty"`
}

// RowBounds bounds the rows of one batch.
type RowBounds struct {
	Min int `yaml:"min" json:"min"`
	Max int `yaml:"max,omitempty" json:"max,omitempty"` // 0: no limit
}

// Range bounds the values of one column; either end may be left open.
type Range struct {
	Min *float64 `yaml:"min,omitempty" json:"min,omitempty"`
	Max *float64 `yaml:"max,omitempty" json:"max,omitempty"`
}

// Drift bounds distribution shift.
type Drift struct {
	PSIMax float64 `yaml:"psi_max" json:"psi_max"`
}

// FileRules check opaque files (format files) and images.
type FileRules struct {
	// extensions: allowed extensions with the dot (.jpg); empty allows any (files), or
	// .png, .jpg and .jpeg (images, which may list only these).
	Extensions []string `yaml:"extensions,omitempty" json:"extensions,omitempty"`
	// max_size: the largest file; 0 leaves only data.max_file_size.
	MaxSize Bytes `yaml:"max_size,omitempty" json:"max_size,omitempty"`
	// max_count: the most files in one batch; 0 is no limit.
	MaxCount int `yaml:"max_count,omitempty" json:"max_count,omitempty"`
}

func (d *Data) validate(c *checker, path string) {
	c.oneOf(path+".format", d.Format, FormatCSV, FormatJSONL, FormatImages, FormatFiles)
	tabular := d.Format == FormatCSV || d.Format == FormatJSONL
	if tabular && d.Label == "" {
		c.failf(path+".label", "required for format %s (the label column)", d.Format)
	}
	if d.Format == FormatImages && d.Label != "" {
		c.failf(path+".label", "not used for format images (an image's class is its folder, or its row in labels.csv)")
	}
	c.nonNegative(path+".settle", d.Settle)
	v, vp := &d.Validate, path+".validate"
	if v.Rows.Min < 0 {
		c.failf(vp+".rows.min", "must not be negative")
	}
	if v.Rows.Max < 0 {
		c.failf(vp+".rows.max", "must not be negative (0 is no limit)")
	} else if v.Rows.Max > 0 && v.Rows.Max < v.Rows.Min {
		c.failf(vp+".rows.max", "%d is below rows.min %d", v.Rows.Max, v.Rows.Min)
	}
	if v.MaxNullFraction != nil {
		c.fraction(vp+".max_null_fraction", *v.MaxNullFraction, false)
	}
	if v.MaxDuplicateFraction != nil {
		c.fraction(vp+".max_duplicate_fraction", *v.MaxDuplicateFraction, false)
	}
	seen := map[string]bool{}
	for i, l := range v.Labels {
		p := fmt.Sprintf("%s.labels[%d]", vp, i)
		switch {
		case l == "":
			c.failf(p, "empty label")
		case seen[l]:
			c.failf(p, "%q is listed twice", l)
		case d.Format == FormatImages && !ClassName(l):
			c.failf(p, "%q is not a class an image folder can have (no /, no control characters, not . or ..)", l)
		}
		seen[l] = true
	}
	for _, col := range sortedKeys(v.Ranges) {
		r, p := v.Ranges[col], vp+".ranges."+col
		switch {
		case col == "":
			c.failf(p, "empty column name")
		case r.Min == nil && r.Max == nil:
			c.failf(p, "set min, max or both")
		case r.Min != nil && r.Max != nil && *r.Min > *r.Max:
			c.failf(p+".max", "%v is below min %v", *r.Max, *r.Min)
		case col == d.Label:
			c.failf(p, "%q is the label column; use validate.labels for its values", col)
		}
	}
	if v.Drift != nil && !(v.Drift.PSIMax > 0) {
		c.failf(vp+".drift.psi_max", "must be above 0 (0.1 is a small shift, 0.25 a large one)")
	}
	if f := v.Files; f != nil {
		for i, e := range f.Extensions {
			p := fmt.Sprintf("%s.files.extensions[%d]", vp, i)
			switch {
			case !strings.HasPrefix(e, ".") || len(e) < 2 || strings.ContainsAny(e, "/ "):
				c.failf(p, "%q is not an extension (want e.g. .jpg)", e)
			case d.Format == FormatImages && !slices.Contains(ImageExtensions, strings.ToLower(e)):
				c.failf(p, "%q is not an image format kiln decodes (want %s)", e, strings.Join(ImageExtensions, ", "))
			}
		}
		if f.MaxSize < 0 {
			c.failf(vp+".files.max_size", "must not be negative")
		}
		if f.MaxCount < 0 {
			c.failf(vp+".files.max_count", "must not be negative")
		}
	}
	if v.MinPerClass < 0 {
		c.failf(vp+".min_per_class", "must not be negative (0 is no minimum)")
	}
	d.validateApplies(c, vp)
	if d.MaxFileSize <= 0 {
		c.failf(path+".max_file_size", "must be above 0")
	}
}

// ClassName reports whether s can be an images class: a class is a folder name (in a batch,
// and in a trainer's input, train/<class>/), so one path element with no control characters.
func ClassName(s string) bool {
	return s != "" && s != "." && s != ".." && utf8.ValidString(s) &&
		!strings.ContainsFunc(s, func(r rune) bool { return r == '/' || r == '\\' || unicode.IsControl(r) })
}

// ImageExtensions are the extensions format images decodes (image/png, image/jpeg), and the
// default of its validate.files.extensions.
var ImageExtensions = []string{".png", ".jpg", ".jpeg"}

// validateApplies refuses the validate rules that mean nothing for the format: row rules
// for files and images, file rules for csv and jsonl, min_per_class for all but images.
func (d *Data) validateApplies(c *checker, vp string) {
	v := &d.Validate
	set := map[string]bool{
		"rows": v.Rows != (RowBounds{}), "max_null_fraction": v.MaxNullFraction != nil,
		"max_duplicate_fraction": v.MaxDuplicateFraction != nil, "labels": len(v.Labels) > 0,
		"ranges": len(v.Ranges) > 0, "drift": v.Drift != nil, "files": v.Files != nil, "min_per_class": v.MinPerClass != 0,
	}
	var wrong []string
	var where string
	switch d.Format {
	case FormatFiles:
		wrong, where = []string{"max_null_fraction", "max_duplicate_fraction", "labels", "ranges", "drift", "min_per_class"}, "format files"
	case FormatImages:
		wrong, where = []string{"rows", "max_null_fraction", "max_duplicate_fraction", "ranges"}, "format images"
	case FormatCSV, FormatJSONL:
		wrong, where = []string{"files", "min_per_class"}, d.Format
	}
	for _, key := range wrong {
		if !set[key] {
			continue
		}
		switch key {
		case "files":
			c.failf(vp+".files", "applies to format files and images, not %s", d.Format)
		case "min_per_class":
			c.failf(vp+".min_per_class", "applies to format images, not %s", d.Format)
		case "rows":
			c.failf(vp+".rows", "applies to csv, jsonl and files, not %s (count images with files.max_count and min_per_class)", where)
		default:
			if d.Format == FormatFiles && (key == "labels" || key == "drift") {
				c.failf(vp+"."+key, "applies to csv, jsonl and images, not format files")
			} else {
				c.failf(vp+"."+key, "applies to csv and jsonl data, not %s", where)
			}
		}
	}
}
