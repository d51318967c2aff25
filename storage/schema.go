package storage

import (
	"bytes"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// SchemaVersion is the schema this code writes. Open upgrades older
// databases through migrations and refuses newer ones.
const SchemaVersion = 8

var (
	bucketMeta      = []byte("meta")
	bucketEvents    = []byte("events")
	bucketSeqs      = []byte("seqs")
	bucketDatasets  = []byte("datasets")
	bucketRuns      = []byte("runs")
	bucketModels    = []byte("models")
	bucketDeploys   = []byte("deploys")
	bucketLeases    = []byte("leases")
	bucketLineage   = []byte("lineage")
	bucketUp        = []byte("up")
	bucketDown      = []byte("down")
	bucketBlobRefs  = []byte("blobrefs")
	bucketCordons   = []byte("cordons")
	bucketPins      = []byte("pins")
	bucketEventRefs = []byte("eventrefs")
	bucketScores    = []byte("scores")
	bucketSignals   = []byte("signals")
	bucketMonitor   = []byte("monitor")

	keySchema = []byte("schema")
	keyHead   = []byte("head")
)

// migration moves a database from version to-1 to version to. Migrations run
// in order, all in one transaction, so a failure leaves the file untouched.
// fn gets the store for the migrations that must read blobs, the files beside
// the database.
type migration struct {
	to   uint64
	name string
	fn   func(*Store, *bolt.Tx) error
}

var migrations = []migration{
	{1, "create meta, events, seqs, record buckets and lineage/up", func(_ *Store, btx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketEvents, bucketSeqs, bucketDatasets, bucketRuns, bucketModels} {
			if _, err := btx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		l, err := btx.CreateBucketIfNotExists(bucketLineage)
		if err != nil {
			return err
		}
		_, err = l.CreateBucketIfNotExists(bucketUp)
		return err
	}},
	{2, "add lineage/down, the reverse edge index, built from lineage/up", func(_ *Store, btx *bolt.Tx) error {
		l := btx.Bucket(bucketLineage)
		down, err := l.CreateBucketIfNotExists(bucketDown)
		if err != nil {
			return err
		}
		return l.Bucket(bucketUp).ForEach(func(k, v []byte) error {
			child, parent, ok := bytes.Cut(k, []byte{0})
			if !ok {
				return fmt.Errorf("lineage/up key %q has no separator", k)
			}
			return down.Put(edgeKey(parent, child), v)
		})
	}},
	{3, "add deploys, leases and blobrefs (indexing blobs named by datasets and models)", func(_ *Store, btx *bolt.Tx) error {
		for _, b := range [][]byte{bucketDeploys, bucketLeases, bucketBlobRefs} {
			if _, err := btx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		refs := btx.Bucket(bucketBlobRefs)
		for _, k := range []*kind{kindDataset, kindModel} {
			err := btx.Bucket(k.bucket).ForEach(func(_, v []byte) error {
				rec, err := k.decode(v)
				if err != nil {
					return err
				}
				for _, b := range rec.blobs() {
					if err := refs.Put(refKey(b.Digest, rec.recID()), u64(uint64(b.Size))); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	}},
	{4, "add cordons (GPUs kept from placement, by UUID)", func(_ *Store, btx *bolt.Tx) error {
		_, err := btx.CreateBucketIfNotExists(bucketCordons)
		return err
	}},
	{5, "add pins (pipelines held on one model, automation off)", func(_ *Store, btx *bolt.Tx) error {
		_, err := btx.CreateBucketIfNotExists(bucketPins)
		return err
	}},
	{6, "add eventrefs (events by the records they name), built from events", func(_ *Store, btx *bolt.Tx) error {
		if _, err := btx.CreateBucketIfNotExists(bucketEventRefs); err != nil {
			return err
		}
		return btx.Bucket(bucketEvents).ForEach(func(k, v []byte) error {
			e, err := decodeEvent(k, v)
			if err != nil {
				return err
			}
			return indexEventRefs(btx, e.Seq, e.Refs)
		})
	}},
	{7, "add scores (feedback versions scored by the monitor), signals (hourly label-free signals) and monitor (detector state)", func(_ *Store, btx *bolt.Tx) error {
		for _, b := range [][]byte{bucketScores, bucketSignals, bucketMonitor} {
			if _, err := btx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	}},
	{8, "record each dataset's format (csv, jsonl or files; images came later)", fillDatasetFormats},
}

func (s *Store) migrate() error {
	return s.db.Update(func(btx *bolt.Tx) error {
		var have uint64
		if m := btx.Bucket(bucketMeta); m != nil {
			if v := m.Get(keySchema); len(v) == 8 {
				have = binary.BigEndian.Uint64(v)
			}
		}
		if have > SchemaVersion {
			return fmt.Errorf("%w: database has schema %d, this kilnd knows up to %d (upgrade kilnd or restore a backup)", ErrNewerSchema, have, SchemaVersion)
		}
		if have == SchemaVersion {
			// A database made before installation IDs gets one here;
			// a new one got it in the transaction that created it.
			return ensureInstallation(btx)
		}
		for _, m := range migrations {
			if m.to <= have {
				continue
			}
			if err := m.fn(s, btx); err != nil {
				return fmt.Errorf("migrate to schema %d (%s): %w", m.to, m.name, err)
			}
			s.log.Info("migrated database", "path", s.path, "schema", m.to, "migration", m.name)
		}
		if err := ensureInstallation(btx); err != nil {
			return err
		}
		return btx.Bucket(bucketMeta).Put(keySchema, u64(SchemaVersion))
	})
}

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

func edgeKey(a, b []byte) []byte {
	k := make([]byte, 0, len(a)+1+len(b))
	k = append(k, a...)
	k = append(k, 0)
	return append(k, b...)
}

func refKey(digest, owner string) []byte { return edgeKey([]byte(digest), []byte(owner)) }
