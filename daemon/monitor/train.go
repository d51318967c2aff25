package monitor

import (
	"fmt"
	"hash/maphash"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/kiln-edge/kiln/daemon/contract"
	"github.com/kiln-edge/kiln/storage"
)

// trainInfo is what the monitor needs to know of the rows a model trained
// on: their keys (so feedback rows the model saw are left out of its
// score), the columns, and per feature a sample of values and the label mix
// (references for the label-free signals).
type trainInfo struct {
	columns []string
	keys    map[uint64]struct{}
	values  map[string][]float64
	labels  map[string]int64
}

// maxReference bounds the values kept per feature for PSI references.
const maxReference = 20000

// trainCache remembers trainInfo by model ID (a model's training data never
// changes); it keeps the few most recently used, since only the live and the
// standby model are scored.
type trainCache struct {
	store  Store
	rowKey func([]string) uint64
	seed   maphash.Seed
	mu     sync.Mutex
	byID   map[string]*trainInfo
	order  []string
}

const trainCacheSize = 4

func newTrainCache(s Store, rowKey func([]string) uint64) *trainCache {
	return &trainCache{store: s, rowKey: rowKey, seed: maphash.MakeSeed(), byID: map[string]*trainInfo{}}
}

func (c *trainCache) get(model string, spec pipelineSpec) (*trainInfo, error) {
	c.mu.Lock()
	if ti, ok := c.byID[model]; ok {
		c.mu.Unlock()
		return ti, nil
	}
	c.mu.Unlock()
	ti, err := c.load(model, spec)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.byID[model]; !ok {
		c.byID[model] = ti
		c.order = append(c.order, model)
		for len(c.order) > trainCacheSize {
			delete(c.byID, c.order[0])
			c.order = c.order[1:]
		}
	}
	return c.byID[model], nil
}

func (c *trainCache) load(model string, spec pipelineSpec) (*trainInfo, error) {
	if spec.format == contract.FormatImages {
		return c.loadImages(model)
	}
	window, err := c.window(model)
	if err != nil {
		return nil, fmt.Errorf("training data of %s: %w", model, err)
	}
	var parts []storage.BlobRef
	for _, d := range window {
		if d.Train != nil {
			parts = append(parts, *d.Train)
		}
	}
	var rows contract.Labelled
	for _, ref := range parts {
		f, err := c.store.OpenBlob(ref)
		if err != nil {
			return nil, fmt.Errorf("training data of %s: %w", model, err)
		}
		if spec.format == "jsonl" {
			err = rows.AddJSONL(f, spec.label, ref.Digest)
		} else {
			err = rows.AddCSV(f, spec.label, ref.Digest)
		}
		closeQuietly(f)
		if err != nil {
			return nil, fmt.Errorf("training data of %s: %w", model, err)
		}
	}
	ti := &trainInfo{columns: rows.Columns, keys: make(map[uint64]struct{}, len(rows.Rows)),
		values: map[string][]float64{}, labels: map[string]int64{}}
	idx := identity(len(rows.Columns))
	// Sampling every k-th row keeps the reference spread over all the data.
	step := max(1, len(rows.Rows)/maxReference)
	for i, r := range rows.Rows {
		ti.keys[c.key(r, idx)] = struct{}{}
		ti.labels[strings.TrimSpace(rows.Labels[i])]++
		if i%step != 0 {
			continue
		}
		for j, v := range r {
			if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
				ti.values[rows.Columns[j]] = append(ti.values[rows.Columns[j]], f)
			}
		}
	}
	return ti, nil
}

// key hashes a row's feature values taken in the order idx gives, so a row
// keyed from feedback columns in another order meets its training twin.
func (c *trainCache) key(row []string, idx []int) uint64 {
	if c.rowKey != nil {
		fields := make([]string, len(idx))
		for i, j := range idx {
			if j >= 0 && j < len(row) {
				fields[i] = row[j]
			}
		}
		return c.rowKey(fields)
	}
	var h maphash.Hash
	h.SetSeed(c.seed)
	for _, j := range idx {
		if j >= 0 && j < len(row) {
			h.WriteString(strings.TrimSpace(row[j]))
		}
		h.WriteByte(0)
	}
	return h.Sum64()
}

// order maps the model's training columns onto cols: idx[i] is the index
// in cols of the model's column i (-1 when cols lacks it).
func (ti *trainInfo) order(cols []string) []int {
	idx := make([]int, len(ti.columns))
	for i, name := range ti.columns {
		idx[i] = slices.Index(cols, name)
	}
	return idx
}

func identity(n int) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return idx
}

// loadImages is load for an images pipeline: a model's training images are
// the labelled train-part files of its window, keyed by content digest
// (imageKey); the label mix comes from their labels. No per-feature
// reference is kept: an image's drift is checked at ingest.
func (c *trainCache) loadImages(model string) (*trainInfo, error) {
	ti := &trainInfo{columns: []string{imageColumn}, keys: map[uint64]struct{}{}, values: map[string][]float64{}, labels: map[string]int64{}}
	idx := identity(1)
	window, err := c.window(model)
	if err != nil {
		return nil, fmt.Errorf("training data of %s: %w", model, err)
	}
	for _, d := range window {
		for _, f := range d.Files {
			if f.Label == "" || f.Holdout {
				continue
			}
			ti.keys[c.key([]string{f.Blob.Digest}, idx)] = struct{}{}
			ti.labels[f.Label]++
		}
	}
	return ti, nil
}

// window is the dataset versions model's run trained on.
func (c *trainCache) window(model string) ([]storage.Dataset, error) {
	var out []storage.Dataset
	err := c.store.View(func(tx *storage.Tx) error {
		m, err := tx.Model(model)
		if err != nil {
			return err
		}
		run, err := tx.Run(m.Run)
		if err != nil {
			return err
		}
		for _, id := range run.Datasets {
			d, err := tx.Dataset(id)
			if err != nil {
				return err
			}
			out = append(out, d)
		}
		return nil
	})
	return out, err
}
