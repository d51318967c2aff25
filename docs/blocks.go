package docs

import (
	"fmt"
	"strings"
)

// The prose and the help texts become blocks, which render as Markdown or
// roff. Text in a block is inline Markdown (code spans, *emphasis*,
// **strong**, [links](to), backslash escapes): the one form both renderers
// read.
type blockKind int

const (
	para blockKind = iota
	heading
	bullet
	code
	term // a definition: term, then text
)

type block struct {
	kind  blockKind
	level int    // heading
	text  string // para, heading, bullet, term's definition
	term  string // term
	lines []string
}

// parseMarkdown reads the subset of Markdown the prose files use. first is
// the file line of lines[0], for errors.
func parseMarkdown(path string, first int, lines []string) ([]block, error) {
	var (
		bs  []block
		cur *block // the paragraph or list item being read
	)
	flush := func() {
		if cur != nil {
			bs = append(bs, *cur)
			cur = nil
		}
	}
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		t := strings.TrimSpace(l)
		switch {
		case t == "":
			flush()
		case strings.HasPrefix(t, "```"):
			flush()
			b := block{kind: code}
			for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
				b.lines = append(b.lines, lines[i])
			}
			if i == len(lines) {
				return nil, fmt.Errorf("%s:%d: code block not closed", path, first)
			}
			bs = append(bs, b)
		case strings.HasPrefix(l, "#"):
			flush()
			hashes, text, _ := strings.Cut(l, " ")
			if strings.Trim(hashes, "#") != "" || len(hashes) < 2 || len(hashes) > 3 {
				return nil, fmt.Errorf("%s:%d: only ## and ### headings, got %q", path, first+i, l)
			}
			bs = append(bs, block{kind: heading, level: len(hashes), text: text})
		case strings.HasPrefix(l, "- "):
			flush()
			cur = &block{kind: bullet, text: l[2:]}
			// "- `term`: text" is a definition (.TP in roff).
			if t, d, ok := strings.Cut(l[2:], "`: "); ok && strings.HasPrefix(t, "`") {
				cur = &block{kind: term, term: t + "`", text: d}
			}
		case strings.HasPrefix(l, "<!--"):
			flush()
		case cur != nil && (cur.kind == bullet || cur.kind == term) && strings.HasPrefix(l, "  "):
			cur.text += "\n" + t
		case cur != nil && cur.kind == para:
			cur.text += "\n" + l
		default:
			flush()
			cur = &block{kind: para, text: l}
		}
	}
	flush()
	return bs, nil
}

// helpBlocks reads a kong Detail text: paragraphs split by blank lines,
// and runs of indented lines (examples) as code.
func helpBlocks(s string) []block {
	var bs []block
	var text []string
	var lines []string
	flushText := func() {
		if len(text) > 0 {
			bs = append(bs, block{kind: para, text: mdEscape(strings.Join(text, "\n"))})
			text = nil
		}
	}
	flushCode := func() {
		if len(lines) > 0 {
			bs = append(bs, block{kind: code, lines: dedent(lines)})
			lines = nil
		}
	}
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		switch {
		case strings.TrimSpace(l) == "":
			flushText()
			flushCode()
		case l[0] == ' ' || l[0] == '\t':
			flushText()
			lines = append(lines, l)
		default:
			flushCode()
			text = append(text, l)
		}
	}
	flushText()
	flushCode()
	return bs
}

func dedent(lines []string) []string {
	min := -1
	for _, l := range lines {
		n := len(l) - len(strings.TrimLeft(l, " \t"))
		if min < 0 || n < min {
			min = n
		}
	}
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = l[min:]
	}
	return out
}

// markdown renders b, its headings shift levels deeper; an all-capitals
// heading (a man page's DESCRIPTION) reads "Description".
func (b block) markdown(shift int) string {
	switch b.kind {
	case heading:
		text := b.text
		if text == strings.ToUpper(text) {
			text = titleCase(text)
		}
		return strings.Repeat("#", b.level+shift) + " " + text + "\n\n"
	case bullet:
		return "- " + strings.ReplaceAll(b.text, "\n", "\n  ") + "\n\n"
	case code:
		return "```\n" + strings.Join(b.lines, "\n") + "\n```\n\n"
	case term:
		return "- " + b.term + ": " + strings.ReplaceAll(b.text, "\n", "\n  ") + "\n\n"
	default:
		return b.text + "\n\n"
	}
}

func (b block) roff() string {
	switch b.kind {
	case heading:
		if b.level <= 2 {
			return ".SH " + strings.ToUpper(roffText(b.text)) + "\n"
		}
		return ".SS " + roffText(b.text) + "\n"
	case bullet:
		return ".IP \\(bu 2\n" + roffLines(roffInline(b.text)) + "\n"
	case code:
		var w strings.Builder
		w.WriteString(".PP\n.RS 4\n.nf\n")
		for _, l := range b.lines {
			w.WriteString(roffLine(roffText(l)) + "\n")
		}
		w.WriteString(".fi\n.RE\n")
		return w.String()
	case term:
		return ".TP\n" + roffLines(roffInline(b.term)) + "\n" + roffLines(roffInline(b.text)) + "\n"
	default:
		return ".PP\n" + roffLines(roffInline(b.text)) + "\n"
	}
}

// mdEscape makes plain text safe as inline Markdown.
func mdEscape(s string) string {
	r := strings.NewReplacer(`\`, `\\`, "`", "\\`", "*", `\*`, "<", `\<`, "[", `\[`)
	return r.Replace(s)
}

// roffText escapes plain text for roff: backslashes and hyphens (a plain
// "-" may become a hyphen; options must stay minus signs to be copied).
func roffText(s string) string {
	return strings.NewReplacer(`\`, `\e`, "-", `\-`).Replace(s)
}

// roffLine keeps a line from being read as a request.
func roffLine(l string) string {
	if strings.HasPrefix(l, ".") || strings.HasPrefix(l, "'") {
		return `\&` + l
	}
	return l
}

func roffLines(s string) string {
	ls := strings.Split(s, "\n")
	for i, l := range ls {
		ls[i] = roffLine(strings.TrimLeft(l, " "))
	}
	return strings.Join(ls, "\n")
}

// roffInline converts inline Markdown to roff: code and **strong** bold,
// *emphasis* italic, a link its text.
func roffInline(s string) string {
	var w strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s):
			i++
			w.WriteString(roffText(s[i : i+1]))
		case c == '`':
			end := strings.IndexByte(s[i+1:], '`')
			if end < 0 {
				w.WriteString(roffText(s[i:]))
				return w.String()
			}
			w.WriteString(`\fB` + roffText(s[i+1:i+1+end]) + `\fR`)
			i += end + 1
		case c == '*' && strings.HasPrefix(s[i:], "**"):
			end := strings.Index(s[i+2:], "**")
			if end < 0 {
				w.WriteString(roffText(s[i:]))
				return w.String()
			}
			w.WriteString(`\fB` + roffInline(s[i+2:i+2+end]) + `\fR`)
			i += end + 3
		case c == '*':
			end := strings.IndexByte(s[i+1:], '*')
			if end <= 0 {
				w.WriteByte('*')
				continue
			}
			w.WriteString(`\fI` + roffInline(s[i+1:i+1+end]) + `\fR`)
			i += end + 1
		case c == '[':
			close := strings.Index(s[i:], "](")
			end := -1
			if close > 0 {
				end = strings.IndexByte(s[i+close:], ')')
			}
			if close < 0 || end < 0 {
				w.WriteByte('[')
				continue
			}
			w.WriteString(roffInline(s[i+1 : i+close]))
			i += close + end
		default:
			w.WriteString(roffText(s[i : i+1]))
		}
	}
	return w.String()
}
