package storage

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"unsafe"

	bolt "go.etcd.io/bbolt"
)

// EdgeType names how a lineage edge's child came from its parent.
type EdgeType string

// Edge types. The first three are derivations (Impact follows only those and
// EdgeRollback/EdgeReplaced); the others annotate.
const (
	EdgeTrainedOn   EdgeType = "trained_on"  // dataset -> run
	EdgeProduced    EdgeType = "produced"    // run -> model
	EdgeDeployed    EdgeType = "deployed"    // model -> deployment
	EdgeReplaced    EdgeType = "replaced"    // deployment -> the deployment that replaced it
	EdgeRollback    EdgeType = "rollback"    // deployment -> the deployment a rollback from it created
	EdgeQuarantined EdgeType = "quarantined" // what quarantined a dataset (a rollback deployment, a check) -> dataset
	EdgeReleased    EdgeType = "released"    // who released a dataset ("uid:1000") -> dataset
	EdgeRanOn       EdgeType = "ran_on"      // "gpu:<uuid>" -> run
	EdgeScored      EdgeType = "scored"      // feedback dataset -> a model it was scored through
	EdgeJoined      EdgeType = "joined"      // labels dataset -> the joined feedback version made from it
)

// edgeType interns a stored type so reading edges does not allocate.
func edgeType(v []byte) EdgeType {
	switch string(v) {
	case string(EdgeTrainedOn):
		return EdgeTrainedOn
	case string(EdgeProduced):
		return EdgeProduced
	case string(EdgeDeployed):
		return EdgeDeployed
	case string(EdgeReplaced):
		return EdgeReplaced
	case string(EdgeRollback):
		return EdgeRollback
	case string(EdgeQuarantined):
		return EdgeQuarantined
	case string(EdgeReleased):
		return EdgeReleased
	case string(EdgeRanOn):
		return EdgeRanOn
	case string(EdgeScored):
		return EdgeScored
	case string(EdgeJoined):
		return EdgeJoined
	}
	return EdgeType(v)
}

// Node is one node reached by a lineage walk.
type Node struct {
	ID    string   `json:"id"`
	Depth int      `json:"depth"` // 1 = direct parent (or child)
	Edge  EdgeType `json:"edge"`  // the edge type it was first reached by
}

func validNode(id string) error {
	if id == "" || strings.IndexByte(id, 0) >= 0 {
		return fmt.Errorf("lineage node %q: %w", id, ErrInvalid)
	}
	return nil
}

// Link records the edge parent -> child of type t, in both directions.
func (tx *Tx) Link(parent, child string, t EdgeType) error {
	if err := tx.writable(); err != nil {
		return err
	}
	if err := validNode(parent); err != nil {
		return err
	}
	if err := validNode(child); err != nil {
		return err
	}
	if parent == child || t == "" {
		return fmt.Errorf("edge %s -[%s]-> %s: %w", parent, t, child, ErrInvalid)
	}
	l := tx.btx.Bucket(bucketLineage)
	if err := l.Bucket(bucketUp).Put(edgeKey([]byte(child), []byte(parent)), []byte(t)); err != nil {
		return err
	}
	return l.Bucket(bucketDown).Put(edgeKey([]byte(parent), []byte(child)), []byte(t))
}

// Ancestors returns everything id descends from, nearest first, up to
// maxDepth edges away (0 = unlimited).
func (tx *Tx) Ancestors(id string, maxDepth int) ([]Node, error) {
	return walk(tx.btx.Bucket(bucketLineage).Bucket(bucketUp), id, maxDepth, nil)
}

// Descendants returns everything that descends from id, nearest first, up to
// maxDepth edges away (0 = unlimited).
func (tx *Tx) Descendants(id string, maxDepth int) ([]Node, error) {
	return walk(tx.btx.Bucket(bucketLineage).Bucket(bucketDown), id, maxDepth, nil)
}

// Impact returns every model and deployment that descends from dataset id
// through derivation edges (trained_on, produced, deployed, replaced,
// rollback), e.g. to flag what a bad batch touched.
func (tx *Tx) Impact(datasetID string) ([]Node, error) {
	nodes, err := walk(tx.btx.Bucket(bucketLineage).Bucket(bucketDown), datasetID, 0, func(t EdgeType) bool {
		return t == EdgeTrainedOn || t == EdgeProduced || t == EdgeDeployed || t == EdgeReplaced || t == EdgeRollback
	})
	if err != nil {
		return nil, err
	}
	out := nodes[:0]
	for _, n := range nodes {
		if _, l, _, err := ParseID(n.ID); err == nil && (l == LetterModel || l == LetterDeployment) {
			out = append(out, n)
		}
	}
	return out, nil
}

// Ancestors is Tx.Ancestors in its own read transaction.
func (s *Store) Ancestors(id string, maxDepth int) (out []Node, err error) {
	err = s.View(func(tx *Tx) error { out, err = tx.Ancestors(id, maxDepth); return err })
	return out, err
}

// Descendants is Tx.Descendants in its own read transaction.
func (s *Store) Descendants(id string, maxDepth int) (out []Node, err error) {
	err = s.View(func(tx *Tx) error { out, err = tx.Descendants(id, maxDepth); return err })
	return out, err
}

// Impact is Tx.Impact in its own read transaction.
func (s *Store) Impact(datasetID string) (out []Node, err error) {
	err = s.View(func(tx *Tx) error { out, err = tx.Impact(datasetID); return err })
	return out, err
}

// walk is a breadth-first walk over an edge index keyed <from> 0x00 <to>.
// Each level's frontier is visited in key order with one cursor: when the
// cursor already sits at or past the next prefix, the keys in between were
// all smaller than the previous prefix's upper bound, so no Seek is needed.
// A window of hundreds of parentless datasets thus costs one Seek, not
// hundreds.
func walk(b *bolt.Bucket, start string, maxDepth int, follow func(EdgeType) bool) ([]Node, error) {
	if err := validNode(start); err != nil {
		return nil, err
	}
	// Sized for a typical ancestry (a run's window of a few hundred
	// datasets): growing a map and slices step by step costs more than the
	// walk itself.
	seen := make(map[string]struct{}, 256)
	seen[start] = struct{}{}
	out := make([]Node, 0, 256)
	frontier := append(make([]string, 0, 256), start)
	next := make([]string, 0, 256)
	var ar arena
	c := b.Cursor()
	prefix := make([]byte, 0, 64)
	for depth := 1; len(frontier) > 0 && (maxDepth <= 0 || depth <= maxDepth); depth++ {
		if !slices.IsSorted(frontier) {
			slices.Sort(frontier)
		}
		next = next[:0]
		var k, v []byte
		positioned := false
		for _, id := range frontier {
			prefix = append(append(prefix[:0], id...), 0)
			if !positioned || (k != nil && bytes.Compare(k, prefix) < 0) {
				k, v = c.Seek(prefix)
				positioned = true
			}
			for ; k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
				t := edgeType(v)
				if follow != nil && !follow(t) {
					continue
				}
				o := ar.string(k[len(prefix):])
				n := len(seen)
				seen[o] = struct{}{}
				if len(seen) == n {
					continue // seen before (one hash instead of lookup+insert)
				}
				out = append(out, Node{ID: o, Depth: depth, Edge: t})
				next = append(next, o)
			}
			if k == nil {
				break // nothing at or after this prefix; later prefixes are larger
			}
		}
		frontier, next = next, frontier
	}
	return out, nil
}

// arena hands out strings backed by shared chunks, so a walk allocates a few
// chunks instead of one string per node. A chunk's bytes are never written
// again once a string points at them.
type arena struct{ buf []byte }

func (a *arena) string(b []byte) string {
	if len(b) == 0 || len(b) > 256 {
		return string(b)
	}
	if cap(a.buf)-len(a.buf) < len(b) {
		a.buf = make([]byte, 0, 8<<10)
	}
	n := len(a.buf)
	a.buf = append(a.buf, b...)
	return unsafe.String(&a.buf[n], len(b)) //nolint:gosec // deliberate string arena (see above): bytes are never written again once a string points at them
}
