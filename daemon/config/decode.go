package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Error is one problem in a config file. It prints as one line,
// file:line:col: path: msg, leaving out the parts that are unknown.
type Error struct {
	File   string
	Line   int
	Column int
	Path   string // field path such as train.resources.memory; empty for the whole file
	Msg    string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" || e.Line > 0 {
		b.WriteString(e.File)
		if e.Line > 0 {
			if e.File == "" {
				b.WriteString("line ")
			} else {
				b.WriteByte(':')
			}
			b.WriteString(strconv.Itoa(e.Line))
			if e.Column > 0 {
				b.WriteString(":" + strconv.Itoa(e.Column))
			}
		}
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// FieldError is what Validate returns: a field path and what is wrong with its value. It has no
// position because a spec may have come as JSON; the YAML loaders add one.
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

// maxNodes bounds the nodes one decode visits. Specs have a few hundred; the bound is there for
// aliases, which let a tiny file name a huge tree ("billion laughs").
const maxNodes = 100_000

// shorthand is for types with a short scalar form besides their mapping form (gpus: 1 or
// gpus: {count: 1}). The mapping form is decoded field by field like any struct, so it gets the
// same unknown-key and per-field errors.
type shorthand interface {
	unmarshalShorthand(n *yaml.Node) error
}

// maxErrors bounds the problems one file reports: every one a person can fix
// in one pass, without a garbage file flooding the terminal or the journal.
const maxErrors = 25

// decoder walks the YAML tree into a struct. It reports every bad field it
// meets (errs) and carries on with the next key or item, so `kiln pipelines
// validate` names them all at once; only the node bound stops it.
type decoder struct {
	file   string
	nodes  int
	errs   []error
	halted bool // the node bound was hit: stop, do not report again
}

// errHalted is returned once the node bound was hit and reported.
var errHalted = errors.New("decode halted")

// report records a problem of one key or item; the walk goes on.
func (d *decoder) report(err error) {
	if err == nil || errors.Is(err, errHalted) {
		return
	}
	if len(d.errs) < maxErrors {
		d.errs = append(d.errs, err)
	} else if len(d.errs) == maxErrors {
		d.errs = append(d.errs, &Error{File: d.file, Msg: fmt.Sprintf("more problems not shown (after %d)", maxErrors)})
	}
}

func (d *decoder) errf(n *yaml.Node, path, format string, args ...any) error {
	return &Error{File: d.file, Line: n.Line, Column: n.Column, Path: path, Msg: fmt.Sprintf(format, args...)}
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// describe names a node for "want X, got Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		if n.Alias != nil {
			return describe(n.Alias)
		}
	case yaml.ScalarNode:
		if isNull(n) {
			return "nothing"
		}
		v := n.Value
		if len(v) > 40 {
			v = v[:40] + "..."
		}
		return strconv.Quote(v)
	}
	return "nothing"
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func want(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return "a mapping"
	case reflect.Slice:
		return "a list"
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "true or false"
	case reflect.Pointer:
		return want(t.Elem())
	}
	return t.String()
}

// decode stores n into v. A null node or an absent key leaves v as it is, which is how the
// defaults pre-filled into v survive.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) error {
	d.nodes++
	if d.nodes > maxNodes {
		if d.halted {
			return errHalted
		}
		d.halted = true
		return d.errf(n, path, "too many nodes (more than %d, counting alias expansions)", maxNodes)
	}
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			return d.errf(n, path, "unknown alias")
		}
		return d.decode(n.Alias, v, path)
	}
	if isNull(n) {
		return nil
	}
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return d.decode(n, v.Elem(), path)
	}
	if v.CanAddr() {
		switch u := v.Addr().Interface().(type) {
		case shorthand:
			if n.Kind == yaml.ScalarNode {
				if err := u.unmarshalShorthand(n); err != nil {
					return d.errf(n, path, "%s", err)
				}
				return nil
			}
		case yaml.Unmarshaler:
			if err := u.UnmarshalYAML(n); err != nil {
				return d.errf(n, path, "%s", err)
			}
			return nil
		}
	}
	switch v.Kind() {
	case reflect.Struct:
		return d.decodeStruct(n, v, path)
	case reflect.Map:
		return d.decodeMap(n, v, path)
	case reflect.Slice:
		return d.decodeSlice(n, v, path)
	}
	if n.Kind != yaml.ScalarNode {
		return d.errf(n, path, "want %s, got %s", want(v.Type()), describe(n))
	}
	tag := n.ShortTag()
	switch v.Kind() {
	case reflect.String:
		// Any scalar is a string, as its literal text: a label 1 or a hyperparameter 1e-3 is
		// kept exactly as written, which is what SageMaker passes to a trainer.
		v.SetString(n.Value)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		var i int64
		if tag != "!!int" || n.Decode(&i) != nil {
			var f float64
			if tag == "!!float" && n.Decode(&f) == nil {
				if f == math.Trunc(f) {
					return d.errf(n, path, "%s is out of range", n.Value)
				}
				return d.errf(n, path, "want a whole number, got %s", n.Value)
			}
			return d.errf(n, path, "want an integer, got %s", describe(n))
		}
		if v.OverflowInt(i) {
			return d.errf(n, path, "%d is out of range", i)
		}
		v.SetInt(i)
	case reflect.Float32, reflect.Float64:
		var f float64
		if (tag != "!!float" && tag != "!!int") || n.Decode(&f) != nil {
			return d.errf(n, path, "want a number, got %s", describe(n))
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return d.errf(n, path, "want a finite number, got %s", n.Value)
		}
		v.SetFloat(f)
	case reflect.Bool:
		var b bool
		if tag != "!!bool" || n.Decode(&b) != nil {
			return d.errf(n, path, "want true or false, got %s", describe(n))
		}
		v.SetBool(b)
	default:
		return d.errf(n, path, "cannot decode into %s", v.Type())
	}
	return nil
}

// mappingPairs checks the shape every mapping must have (scalar keys, no duplicates, no merge
// keys) and calls f for each key and value. A bad pair is reported and skipped; the others are
// still decoded, so every problem in the file is found in one pass.
func (d *decoder) mappingPairs(n *yaml.Node, path string, f func(key string, k, val *yaml.Node) error) error {
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content) && !d.halted; i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.AliasNode && k.Alias != nil {
			k = k.Alias
		}
		if k.Kind != yaml.ScalarNode {
			d.report(d.errf(k, path, "a key must be a plain string, got %s", describe(k)))
			continue
		}
		if k.ShortTag() == "!!merge" {
			d.report(d.errf(k, joinPath(path, "<<"), "merge keys are not supported; write the keys out"))
			continue
		}
		if line, dup := seen[k.Value]; dup {
			d.report(d.errf(k, joinPath(path, k.Value), "duplicate key (first at line %d)", line))
			continue
		}
		seen[k.Value] = k.Line
		d.report(f(k.Value, k, val))
	}
	return nil
}

type fieldInfo struct {
	index int
	name  string
}

// yamlFields lists a struct's keys in declaration order.
func yamlFields(t reflect.Type) []fieldInfo {
	var out []fieldInfo
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out = append(out, fieldInfo{i, name})
	}
	return out
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind != yaml.MappingNode {
		return d.errf(n, path, "want a mapping, got %s", describe(n))
	}
	fields := yamlFields(v.Type())
	return d.mappingPairs(n, path, func(key string, k, val *yaml.Node) error {
		i := slices.IndexFunc(fields, func(f fieldInfo) bool { return f.name == key })
		if i < 0 {
			known := make([]string, len(fields))
			for j, f := range fields {
				known[j] = f.name
			}
			return d.errf(k, joinPath(path, key), "unknown field (known: %s)", strings.Join(known, ", "))
		}
		return d.decode(val, v.Field(fields[i].index), joinPath(path, key))
	})
}

func (d *decoder) decodeMap(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind != yaml.MappingNode {
		return d.errf(n, path, "want a mapping, got %s", describe(n))
	}
	if v.Type().Key().Kind() != reflect.String {
		return d.errf(n, path, "cannot decode into %s", v.Type())
	}
	if v.IsNil() {
		v.Set(reflect.MakeMapWithSize(v.Type(), len(n.Content)/2))
	}
	elem := v.Type().Elem()
	return d.mappingPairs(n, path, func(key string, k, val *yaml.Node) error {
		p := joinPath(path, key)
		if isNull(val) && elem.Kind() != reflect.Pointer && elem.Kind() != reflect.Struct {
			return d.errf(k, p, "no value (write \"\" for an empty string)")
		}
		e := reflect.New(elem).Elem()
		if err := d.decode(val, e, p); err != nil {
			return err
		}
		v.SetMapIndex(reflect.ValueOf(key).Convert(v.Type().Key()), e)
		return nil
	})
}

func (d *decoder) decodeSlice(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind != yaml.SequenceNode {
		return d.errf(n, path, "want a list, got %s", describe(n))
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		if d.halted {
			break
		}
		p := fmt.Sprintf("%s[%d]", path, i)
		if isNull(item) {
			d.report(d.errf(item, p, "empty list item"))
			continue
		}
		d.report(d.decode(item, s.Index(i), p))
	}
	v.Set(s)
	return nil
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// emptyDocument reports whether data holds no YAML content at all: nothing,
// only comments, or a null document.
func emptyDocument(data []byte) bool {
	var doc yaml.Node
	err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&doc)
	if errors.Is(err, io.EOF) {
		return true
	}
	return err == nil && (len(doc.Content) == 0 || isNull(doc.Content[0]))
}

// parseDocument parses data as exactly one YAML document whose top level is a mapping.
func parseDocument(file string, data []byte) (root *yaml.Node, err error) {
	defer func() {
		// The parser is third-party and sees untrusted bytes; a bug in it must not take the
		// daemon down during a reload.
		if r := recover(); r != nil {
			root, err = nil, &Error{File: file, Msg: fmt.Sprintf("invalid YAML (parser failed: %v)", r)}
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &Error{File: file, Msg: "empty file (want a mapping of keys such as name:, data:)"}
		}
		return nil, syntaxError(file, data, err)
	}
	for {
		// An empty document (a trailing ---) is harmless; a second one with content is a
		// second spec pasted into the file, and which one was meant is a guess.
		var extra yaml.Node
		err := dec.Decode(&extra)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, syntaxError(file, data, err)
		}
		if len(extra.Content) > 0 && !isNull(extra.Content[0]) {
			return nil, &Error{File: file, Line: extra.Content[0].Line,
				Msg: "more than one YAML document (a file holds one spec; remove the --- separator)"}
		}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 || isNull(doc.Content[0]) {
		return nil, &Error{File: file, Msg: "empty file (want a mapping of keys such as name:, data:)"}
	}
	root = doc.Content[0]
	if root.Kind == yaml.AliasNode && root.Alias != nil {
		root = root.Alias
	}
	if root.Kind != yaml.MappingNode {
		return nil, &Error{File: file, Line: root.Line, Column: root.Column,
			Msg: fmt.Sprintf("the top level must be a mapping of keys such as name:, data:; got %s", describe(root))}
	}
	return root, nil
}

// syntaxError rewrites the parser's "yaml: line N: msg" into the file:line form. Tabs in
// indentation get their own message because the parser's ("found character that cannot start
// any token") does not say what is wrong.
func syntaxError(file string, data []byte, err error) error {
	for i, line := range bytes.Split(data, []byte("\n")) {
		indent := len(line) - len(bytes.TrimLeft(line, " \t"))
		if col := bytes.IndexByte(line[:indent], '\t'); col >= 0 {
			return &Error{File: file, Line: i + 1, Column: col + 1, Msg: "tab in indentation (YAML indents with spaces)"}
		}
	}
	msg := strings.TrimPrefix(strings.ReplaceAll(err.Error(), "\n", "; "), "yaml: ")
	line := 0
	if m := yamlLineRE.FindStringSubmatch("yaml: " + msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	// yaml.v3 numbers its scanner errors from 1 but its parser errors from 0, leaving out line 0
	// (go-yaml issue 157's family); the parser's messages are few and fixed, so put them right.
	if parserProblems[msg] {
		line++
	}
	if m := unknownAnchorRE.FindStringSubmatch(msg); m != nil {
		// The parser gives no position here; the first use of the alias is the one to fix.
		if i := bytes.Index(data, []byte("*"+m[1])); i >= 0 {
			line = bytes.Count(data[:i], []byte("\n")) + 1
			col := i - bytes.LastIndexByte(data[:i], '\n')
			return &Error{File: file, Line: line, Column: col, Msg: "invalid YAML: " + msg}
		}
	}
	return &Error{File: file, Line: line, Msg: "invalid YAML: " + msg}
}

var unknownAnchorRE = regexp.MustCompile(`^unknown anchor '(.*)' referenced$`)

var parserProblems = map[string]bool{
	"did not find expected ',' or ']'": true, "did not find expected ',' or '}'": true,
	"did not find expected '-' indicator": true, "did not find expected <document start>": true,
	"did not find expected <stream-start>": true, "did not find expected key": true,
	"did not find expected node content": true, "found duplicate %TAG directive": true,
	"found duplicate %YAML directive": true, "found incompatible YAML document": true,
	"found undefined tag handle": true,
}

// locate finds where path is written under root. A path that is not in the file (a required
// key left out) is placed at its nearest ancestor's key, so the message points at the section
// to add it to.
func locate(root *yaml.Node, path string) (line, col int) {
	n := root
	line, col = n.Line, n.Column
	for path != "" {
		for n.Kind == yaml.AliasNode && n.Alias != nil {
			n = n.Alias
		}
		switch n.Kind {
		case yaml.MappingNode:
			found := false
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i]
				rest, ok := strings.CutPrefix(path, k.Value)
				if !ok || (rest != "" && rest[0] != '.' && rest[0] != '[') {
					continue
				}
				n, path, found = n.Content[i+1], strings.TrimPrefix(rest, "."), true
				line, col = k.Line, k.Column
				// A scalar is pointed at itself; a section at its key, since a block
				// mapping's own position is its first child's line.
				if path == "" && n.Kind == yaml.ScalarNode && !isNull(n) {
					line, col = n.Line, n.Column
				}
				break
			}
			if !found {
				return line, col
			}
		case yaml.SequenceNode:
			end := strings.IndexByte(path, ']')
			if path[0] != '[' || end < 0 {
				return line, col
			}
			i, err := strconv.Atoi(path[1:end])
			if err != nil || i < 0 || i >= len(n.Content) {
				return line, col
			}
			n, path = n.Content[i], strings.TrimPrefix(path[end+1:], ".")
			line, col = n.Line, n.Column
		default:
			return line, col
		}
	}
	return line, col
}

// present reports whether path is written in the file.
func present(root *yaml.Node, path string) bool {
	n := root
	for _, key := range strings.Split(path, ".") {
		for n.Kind == yaml.AliasNode && n.Alias != nil {
			n = n.Alias
		}
		if n.Kind != yaml.MappingNode {
			return false
		}
		found := false
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				n, found = n.Content[i+1], true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// positioned turns Validate's errors into file:line:col ones, one per field.
func positioned(file string, root *yaml.Node, err error) error {
	return errors.Join(positionedErrors(file, root, err)...)
}

func positionedErrors(file string, root *yaml.Node, err error) []error {
	var out []error
	for _, leaf := range leaves(err) {
		var fe *FieldError
		if !errors.As(leaf, &fe) {
			out = append(out, &Error{File: file, Msg: leaf.Error()})
			continue
		}
		line, col := locate(root, fe.Path)
		out = append(out, &Error{File: file, Line: line, Column: col, Path: fe.Path, Msg: fe.Msg})
	}
	return out
}

// leaves flattens an errors.Join tree.
func leaves(err error) []error {
	if err == nil {
		return nil
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	var out []error
	for _, e := range j.Unwrap() {
		out = append(out, leaves(e)...)
	}
	return out
}

// inOrder sorts a file's problems by position (those without one first) and
// joins them: one line each, as they read top to bottom.
func inOrder(errs []error) error {
	slices.SortStableFunc(errs, func(a, b error) int {
		var ea, eb *Error
		if !errors.As(a, &ea) || !errors.As(b, &eb) {
			return 0
		}
		if ea.Line != eb.Line {
			return ea.Line - eb.Line
		}
		return ea.Column - eb.Column
	})
	return errors.Join(errs...)
}

// underAny reports whether path is one of bad or inside one: a section whose
// value did not decode has its defaults, and a "required" under it would only
// repeat the decoding error.
func underAny(path string, bad []string) bool {
	for _, b := range bad {
		if b != "" && (path == b || strings.HasPrefix(path, b+".") || strings.HasPrefix(path, b+"[")) {
			return true
		}
	}
	return false
}

// fileErrors joins a file's decoding problems and Validate's, one line per field in file order;
// nil when there are none. A field under one that did not decode is left out (see underAny).
func fileErrors(file string, root *yaml.Node, decodeErr, validateErr error) error {
	errs := leaves(decodeErr)
	var bad []string
	for _, e := range errs {
		var ce *Error
		if errors.As(e, &ce) {
			bad = append(bad, ce.Path)
		}
	}
	for _, e := range positionedErrors(file, root, validateErr) {
		var ce *Error
		if errors.As(e, &ce) && underAny(ce.Path, bad) {
			continue
		}
		errs = append(errs, e)
	}
	if len(errs) == 0 {
		return nil
	}
	return inOrder(errs)
}

// decodeFile parses data and decodes it into out (a pointer to a pre-filled struct). A file
// that parses returns its root even when fields failed to decode; err then joins one *Error
// per bad field, in file order.
func decodeFile(file string, data []byte, out any) (*yaml.Node, error) {
	root, err := parseDocument(file, data)
	if err != nil {
		return nil, err
	}
	d := &decoder{file: file}
	d.report(d.decode(root, reflect.ValueOf(out).Elem(), ""))
	if len(d.errs) > 0 {
		return root, inOrder(d.errs)
	}
	return root, nil
}
