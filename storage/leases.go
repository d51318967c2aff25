package storage

import "fmt"

// PutLease records that GPU uuid is leased to l.Run; a GPU holds one lease.
func (tx *Tx) PutLease(l Lease) error {
	if err := tx.writable(); err != nil {
		return err
	}
	if l.GPU == "" || l.Run == "" {
		return fmt.Errorf("lease %+v: gpu and run are required: %w", l, ErrInvalid)
	}
	b := tx.btx.Bucket(bucketLeases)
	if old := b.Get([]byte(l.GPU)); old != nil {
		var o Lease
		if err := decodeRecord(old, &o); err == nil && o.Run != l.Run {
			return fmt.Errorf("lease gpu %s: held by %s: %w", l.GPU, o.Run, ErrExists)
		}
	}
	if l.Created.IsZero() {
		l.Created = tx.s.now().UTC().Round(0)
	}
	v, err := encodeRecord(l)
	if err != nil {
		return err
	}
	return b.Put([]byte(l.GPU), v)
}

// ReleaseLease removes the lease on GPU uuid, if any.
func (tx *Tx) ReleaseLease(gpu string) error {
	if err := tx.writable(); err != nil {
		return err
	}
	return tx.btx.Bucket(bucketLeases).Delete([]byte(gpu))
}

// Leases lists current GPU leases by GPU UUID.
func (tx *Tx) Leases() ([]Lease, error) {
	var out []Lease
	err := tx.btx.Bucket(bucketLeases).ForEach(func(k, v []byte) error {
		var l Lease
		if err := decodeRecord(v, &l); err != nil {
			return fmt.Errorf("lease %s: %w", k, err)
		}
		out = append(out, l)
		return nil
	})
	return out, err
}

// PutCordon cordons GPU c.GPU (replacing an earlier reason).
func (tx *Tx) PutCordon(c Cordon) error {
	if err := tx.writable(); err != nil {
		return err
	}
	if c.GPU == "" || c.Reason == "" {
		return fmt.Errorf("cordon %+v: gpu and reason are required: %w", c, ErrInvalid)
	}
	if c.Created.IsZero() {
		c.Created = tx.s.now().UTC().Round(0)
	}
	v, err := encodeRecord(c)
	if err != nil {
		return err
	}
	return tx.btx.Bucket(bucketCordons).Put([]byte(c.GPU), v)
}

// DeleteCordon lifts the cordon on GPU uuid; ErrNotFound when there is none.
func (tx *Tx) DeleteCordon(gpu string) error {
	if err := tx.writable(); err != nil {
		return err
	}
	b := tx.btx.Bucket(bucketCordons)
	if b.Get([]byte(gpu)) == nil {
		return fmt.Errorf("gpu %s is not cordoned: %w", gpu, ErrNotFound)
	}
	return b.Delete([]byte(gpu))
}

// Cordons lists cordoned GPUs by UUID.
func (tx *Tx) Cordons() ([]Cordon, error) {
	var out []Cordon
	err := tx.btx.Bucket(bucketCordons).ForEach(func(k, v []byte) error {
		var c Cordon
		if err := decodeRecord(v, &c); err != nil {
			return fmt.Errorf("cordon %s: %w", k, err)
		}
		out = append(out, c)
		return nil
	})
	return out, err
}
