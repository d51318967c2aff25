package storage

import "fmt"

// PutPin pins p.Pipeline to p.Model.
func (tx *Tx) PutPin(p Pin) error {
	if err := tx.writable(); err != nil {
		return err
	}
	if !ValidPipeline(p.Pipeline) || p.Model == "" {
		return fmt.Errorf("pin %+v: pipeline and model are required: %w", p, ErrInvalid)
	}
	if p.Created.IsZero() {
		p.Created = tx.s.now().UTC().Round(0)
	}
	v, err := encodeRecord(p)
	if err != nil {
		return err
	}
	return tx.btx.Bucket(bucketPins).Put([]byte(p.Pipeline), v)
}

// DeletePin unpins a pipeline; ErrNotFound when it is not pinned.
func (tx *Tx) DeletePin(pipeline string) error {
	if err := tx.writable(); err != nil {
		return err
	}
	b := tx.btx.Bucket(bucketPins)
	if b.Get([]byte(pipeline)) == nil {
		return fmt.Errorf("pipeline %s is not pinned: %w", pipeline, ErrNotFound)
	}
	return b.Delete([]byte(pipeline))
}

// Pin reads a pipeline's pin; ok is false when it is not pinned.
func (tx *Tx) Pin(pipeline string) (p Pin, ok bool, err error) {
	v := tx.btx.Bucket(bucketPins).Get([]byte(pipeline))
	if v == nil {
		return Pin{}, false, nil
	}
	return p, true, decodeRecord(v, &p)
}
