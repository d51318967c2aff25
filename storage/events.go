package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Event is one append-only record of the audit trail. Seq, Prev and Hash are
// assigned by the store; Time defaults to the store's clock and Actor to
// "kilnd".
type Event struct {
	Seq      uint64            `json:"seq"`
	Time     time.Time         `json:"time"`
	Actor    string            `json:"actor"` // "kilnd" or "uid:1000"
	Kind     string            `json:"kind"`
	Pipeline string            `json:"pipeline,omitempty"`
	Refs     []string          `json:"refs,omitempty"`
	Details  map[string]string `json:"details,omitempty"`
	Prev     string            `json:"prev"` // hex sha256 of the previous event's body; "" for seq 1
	Hash     string            `json:"hash"` // hex sha256 of this event's body
}

// eventBody is the hashed, stored form of an event (everything but Hash).
type eventBody struct {
	V        int               `json:"v"`
	Seq      uint64            `json:"seq"`
	Time     time.Time         `json:"time"`
	Actor    string            `json:"actor"`
	Kind     string            `json:"kind"`
	Pipeline string            `json:"pipeline,omitempty"`
	Refs     []string          `json:"refs,omitempty"`
	Details  map[string]string `json:"details,omitempty"`
	Prev     string            `json:"prev"`
}

const eventV = 1

type chainHead struct {
	seq  uint64
	hash [32]byte
}

func (h chainHead) hex() string {
	if h.seq == 0 {
		return ""
	}
	return hex.EncodeToString(h.hash[:])
}

func readHead(btx *bolt.Tx) (chainHead, error) {
	var h chainHead
	v := btx.Bucket(bucketMeta).Get(keyHead)
	if v == nil {
		return h, nil
	}
	if len(v) != 40 {
		return h, fmt.Errorf("meta/head is %d bytes, want 40: %w", len(v), ErrChainBroken)
	}
	h.seq = binary.BigEndian.Uint64(v)
	copy(h.hash[:], v[8:])
	return h, nil
}

func writeHead(btx *bolt.Tx, h chainHead) error {
	v := make([]byte, 40)
	binary.BigEndian.PutUint64(v, h.seq)
	copy(v[8:], h.hash[:])
	return btx.Bucket(bucketMeta).Put(keyHead, v)
}

// Append adds e to the chain and returns it as stored, once durable.
// Concurrent Appends share commits.
func (s *Store) Append(ctx context.Context, e Event) (Event, error) {
	var out Event
	err := s.Update(ctx, func(tx *Tx) error {
		var err error
		out, err = tx.Append(e)
		return err
	})
	return out, err
}

// Append adds e to the chain inside this transaction: it commits with the
// records the transaction writes, or not at all.
func (tx *Tx) Append(e Event) (Event, error) {
	if err := tx.writable(); err != nil {
		return Event{}, err
	}
	if e.Kind == "" {
		return Event{}, fmt.Errorf("append event: empty kind: %w", ErrInvalid)
	}
	if e.Actor == "" {
		e.Actor = "kilnd"
	}
	if e.Time.IsZero() {
		e.Time = tx.s.now()
	}
	e.Time = e.Time.UTC().Round(0)
	h := tx.head
	e.Seq = h.seq + 1
	e.Prev = h.hex()
	body, err := json.Marshal(eventBody{V: eventV, Seq: e.Seq, Time: e.Time, Actor: e.Actor, Kind: e.Kind,
		Pipeline: e.Pipeline, Refs: e.Refs, Details: e.Details, Prev: e.Prev})
	if err != nil {
		return Event{}, fmt.Errorf("append event %s: %w", e.Kind, err)
	}
	sum := sha256.Sum256(body)
	v := make([]byte, 32+len(body))
	copy(v, sum[:])
	copy(v[32:], body)
	if err := tx.btx.Bucket(bucketEvents).Put(u64(e.Seq), v); err != nil {
		return Event{}, fmt.Errorf("append event %d: %w", e.Seq, err)
	}
	if err := indexEventRefs(tx.btx, e.Seq, e.Refs); err != nil {
		return Event{}, fmt.Errorf("append event %d: %w", e.Seq, err)
	}
	h.seq, h.hash = e.Seq, sum
	*tx.appended = true
	e.Hash = hex.EncodeToString(sum[:])
	return e, nil
}

// indexEventRefs files seq under each of its refs, so the history of one
// record is a prefix scan rather than a walk over the whole chain.
func indexEventRefs(btx *bolt.Tx, seq uint64, refs []string) error {
	b := btx.Bucket(bucketEventRefs)
	for _, ref := range refs {
		if ref == "" || strings.IndexByte(ref, 0) >= 0 {
			continue
		}
		if err := b.Put(edgeKey([]byte(ref), u64(seq)), nil); err != nil {
			return err
		}
	}
	return nil
}

// EventsFor returns, oldest first, the events that name ref among their refs.
func (s *Store) EventsFor(ref string) ([]Event, error) {
	var out []Event
	err := s.db.View(func(btx *bolt.Tx) error {
		events := btx.Bucket(bucketEvents)
		prefix := edgeKey([]byte(ref), nil)
		c := btx.Bucket(bucketEventRefs).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			seqKey := k[len(prefix):]
			v := events.Get(seqKey)
			if v == nil {
				continue
			}
			e, err := decodeEvent(seqKey, v)
			if err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// Head returns the last committed event's seq and hash (0, "" when empty).
func (s *Store) Head() (seq uint64, hash string) {
	s.headMu.Lock()
	defer s.headMu.Unlock()
	return s.head.seq, s.head.hex()
}

func decodeEvent(k, v []byte) (Event, error) {
	seq := binary.BigEndian.Uint64(k)
	if len(v) < 32 {
		return Event{}, fmt.Errorf("event %d: value too short: %w", seq, ErrChainBroken)
	}
	var b eventBody
	if err := json.Unmarshal(v[32:], &b); err != nil {
		return Event{}, fmt.Errorf("event %d: %w: %w", seq, ErrChainBroken, err)
	}
	if b.V != eventV {
		return Event{}, fmt.Errorf("event %d: encoding v%d unknown: %w", seq, b.V, ErrInvalid)
	}
	return Event{Seq: b.Seq, Time: b.Time, Actor: b.Actor, Kind: b.Kind, Pipeline: b.Pipeline,
		Refs: b.Refs, Details: b.Details, Prev: b.Prev, Hash: hex.EncodeToString(v[:32])}, nil
}

// Events returns up to limit events starting at fromSeq (seqs start at 1).
func (s *Store) Events(fromSeq uint64, limit int) ([]Event, error) {
	var out []Event
	err := s.db.View(func(btx *bolt.Tx) error {
		c := btx.Bucket(bucketEvents).Cursor()
		for k, v := c.Seek(u64(fromSeq)); k != nil && (limit <= 0 || len(out) < limit); k, v = c.Next() {
			e, err := decodeEvent(k, v)
			if err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// Verify walks the whole chain and checks every event's hash, its link to the
// previous one, that seqs have no gap, and that the last event is the
// recorded head. The error names the first bad seq.
func (s *Store) Verify(ctx context.Context) error {
	return s.db.View(func(btx *bolt.Tx) error {
		head, err := readHead(btx)
		if err != nil {
			return err
		}
		var prev [32]byte
		var want uint64 = 1
		c := btx.Bucket(bucketEvents).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if want%4096 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			seq := binary.BigEndian.Uint64(k)
			if seq != want {
				return fmt.Errorf("verify: event %d missing (next stored is %d): %w", want, seq, ErrChainBroken)
			}
			if len(v) < 32 {
				return fmt.Errorf("verify: event %d: value too short: %w", seq, ErrChainBroken)
			}
			sum := sha256.Sum256(v[32:])
			if !bytes.Equal(sum[:], v[:32]) {
				return fmt.Errorf("verify: event %d: content does not match its hash: %w", seq, ErrChainBroken)
			}
			var b eventBody
			if err := json.Unmarshal(v[32:], &b); err != nil {
				return fmt.Errorf("verify: event %d: %w: %w", seq, ErrChainBroken, err)
			}
			wantPrev := ""
			if seq > 1 {
				wantPrev = hex.EncodeToString(prev[:])
			}
			if b.Seq != seq || b.Prev != wantPrev {
				return fmt.Errorf("verify: event %d: does not link to event %d: %w", seq, seq-1, ErrChainBroken)
			}
			prev = sum
			want++
		}
		if last := want - 1; last != head.seq || (last > 0 && prev != head.hash) {
			return fmt.Errorf("verify: chain ends at event %d but head is event %d: %w", last, head.seq, ErrChainBroken)
		}
		return nil
	})
}

// Subscribe streams events from fromSeq: the backlog first, then live events
// as they commit, in order, without polling the file. The channel closes
// when ctx is done, when the store closes, or on a read error (logged).
func (s *Store) Subscribe(ctx context.Context, fromSeq uint64) <-chan Event {
	ch := make(chan Event, 64)
	if fromSeq == 0 {
		fromSeq = 1
	}
	go func() {
		defer close(ch)
		next := fromSeq
		const page = 512
		for {
			s.headMu.Lock()
			wake := s.notify // taken before reading, so no commit is missed
			s.headMu.Unlock()
			evs, err := s.Events(next, page)
			if err != nil {
				s.log.Error("subscribe: read events", "from", next, "err", err)
				return
			}
			for _, e := range evs {
				select {
				case ch <- e:
				case <-ctx.Done():
					return
				}
				next = e.Seq + 1
			}
			if len(evs) == page {
				continue
			}
			select {
			case <-wake:
			case <-ctx.Done():
				return
			case <-s.closing:
				return
			}
		}
	}()
	return ch
}
