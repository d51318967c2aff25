package config

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// maxSpecSize bounds a spec file; real ones are a few kilobytes, and a reload must not read a
// stray multi-gigabyte file dropped into the folder.
const maxSpecSize = 1 << 20

func sortedKeys[M ~map[K]V, K cmp.Ordered, V any](m M) []K {
	return slices.Sorted(maps.Keys(m))
}

// specName is the pipeline name a file name implies: its base name without .yaml or .yml, or ""
// when file has neither extension (stdin, an API upload), in which case name: is required.
func specName(file string) string {
	base := filepath.Base(file)
	for _, ext := range []string{".yaml", ".yml"} {
		if n, ok := strings.CutSuffix(base, ext); ok {
			return n
		}
	}
	return ""
}

// IsSpecFile reports whether LoadPipelines reads the file at path: a
// .yaml or .yml name that is not a dot-file (an editor's or installer's temp).
func IsSpecFile(path string) bool {
	name := filepath.Base(path)
	return !strings.HasPrefix(name, ".") && specName(name) != ""
}

// ParsePipeline decodes one spec strictly, applies the defaults and validates it. file names
// the spec in errors and supplies its name: a spec's name is its file's base name, so a name:
// that differs is refused here as it would be on reload.
func ParsePipeline(file string, data []byte) (*Pipeline, error) {
	if len(data) > maxSpecSize {
		return nil, &Error{File: file, Msg: fmt.Sprintf("file is %d bytes; a spec may have at most %d", len(data), maxSpecSize)}
	}
	p := defaultPipeline()
	root, decodeErr := decodeFile(file, data, &p)
	if root == nil {
		return nil, decodeErr
	}
	// Every problem in the file is reported at once (kiln pipelines validate, a rejected
	// reload): the fields that did not decode, the name, then Validate's.
	p.applyExclusiveDefaults(root)
	var nameErr error
	if want := specName(file); want != "" {
		switch {
		case p.Name == "" && !NameRE.MatchString(want):
			nameErr = &Error{File: file, Msg: fmt.Sprintf("file name %q is not a valid pipeline name (want 1 to %d of a-z, 0-9 and -; the file name is the pipeline name)", want, MaxNameLen)}
		case p.Name == "":
			p.Name = want
		case p.Name != want:
			line, col := locate(root, "name")
			nameErr = &Error{File: file, Line: line, Column: col, Path: "name",
				Msg: fmt.Sprintf("%q differs from the file name %q (a spec is named by its file; rename one of them)", clip(p.Name), want)}
		}
	}
	validateErr := p.Validate()
	if nameErr != nil {
		// The name's own problem says it better than Validate's view of it.
		var kept []error
		for _, e := range leaves(validateErr) {
			if fe := (*FieldError)(nil); !errors.As(e, &fe) || fe.Path != "name" {
				kept = append(kept, e)
			}
		}
		decodeErr = errors.Join(decodeErr, nameErr)
		validateErr = errors.Join(kept...)
	}
	if err := fileErrors(file, root, decodeErr, validateErr); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	p.File, p.Digest = file, "sha256:"+hex.EncodeToString(sum[:])
	return &p, nil
}

// LoadPipelineFile reads and parses one spec.
func LoadPipelineFile(path string) (*Pipeline, error) {
	data, err := readSpec(path)
	if err != nil {
		return nil, err
	}
	return ParsePipeline(path, data)
}

func readSpec(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }() // opened read-only, for Stat
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, &Error{File: path, Msg: "not a regular file"}
	}
	if fi.Size() > maxSpecSize {
		return nil, &Error{File: path, Msg: fmt.Sprintf("file is %d bytes; a spec may have at most %d", fi.Size(), maxSpecSize)}
	}
	return os.ReadFile(path)
}

// LoadPipelines loads every *.yaml and *.yml in dir, all or nothing: when any file is bad the
// error has one line per bad file and no set is returned, so a reload keeps the old set. A
// missing dir is an empty set (a fresh install has no pipelines). Dot-files are skipped: editors
// and config management write temporary files there.
func LoadPipelines(dir string) (map[string]*Pipeline, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]*Pipeline{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read pipelines dir: %w", err)
	}
	set := make(map[string]*Pipeline)
	var errs []error
	for _, e := range entries { // ReadDir sorts by name, so errors come in a stable order.
		name := e.Name()
		if !IsSpecFile(name) {
			continue
		}
		path := filepath.Join(dir, name)
		if e.IsDir() {
			errs = append(errs, &Error{File: path, Msg: "is a directory, not a spec file"})
			continue
		}
		p, err := LoadPipelineFile(path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if prev, dup := set[p.Name]; dup {
			errs = append(errs, &Error{File: path, Msg: fmt.Sprintf("pipeline %q is also defined by %s (keep one of them)", p.Name, prev.File)})
			continue
		}
		set[p.Name] = p
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return set, nil
}
