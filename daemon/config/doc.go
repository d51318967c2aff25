// Package config owns what kiln reads from /etc/kiln: the daemon's own settings (kiln.yaml, type
// Daemon), where every file and socket lives (Paths), and the whole typed pipeline spec
// (Pipeline) with its defaults, strict decoding and Validate.
//
// Everything here is pure: no goroutines, no watching, no daemon state. Reload is built on
// LoadPipelines being all or nothing: the daemon builds the complete new set, and only when it
// loads without a single error swaps it in, as Caddy does with its config. A bad spec therefore
// never stops a running pipeline.
//
// # Errors
//
// A person reads these errors at a terminal, often over a slow link, so each is one line that
// names the file, the line and column, the field path and what would be accepted:
//
//	pumps.yaml:14:13: train.resources.memory: invalid size "2Gx" (want e.g. 512Mi, 2Gi)
//	pumps.yaml:9:5: data.validat: unknown field (known: format, label, settle, validate, max_file_size)
//
// To get columns and field paths for every error, specs are not decoded with yaml.v3's struct
// decoder (its type errors carry a line only, and its unknown-field errors no path). The bytes
// are parsed into a yaml.Node tree and decode.go walks it against the Go types by reflection,
// so every error is made where both the node (position) and the path are known. Validate works
// on the typed value alone, so that specs that arrive as JSON are checked the same way; it
// returns a *FieldError and the loader turns its path back into a position by walking the tree.
//
// # Caveats
//
//   - Defaults are applied by decoding over a pre-filled value, so an explicit zero (settle: 0)
//     is kept rather than replaced. Two groups are exclusive (window, evaluate.holdout) and are
//     defaulted only when none of their keys is present.
//   - YAML merge keys (<<) are refused; anchors and aliases work, bounded by a node budget so a
//     small file cannot expand into a huge one.
//   - Sections owned by later work validate only their syntax here; the owners add semantics in
//     their section's validate method.
package config
