package ingest

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// A full or read-only state disk is not a bad batch: the batch stays in the
// drop folder untouched, ingest pauses with the reason (`kiln status`, an
// ingest.paused event) and resumes once a probe write succeeds again. The
// blob store and the database never show a half-written batch either way:
// blobs become visible only by rename after fsync, and a dataset record only
// in the bbolt transaction that commits it.

// diskFault names a write error that says the state disk cannot take more,
// or "" for any other error.
func diskFault(err error) string {
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return "the state disk is full: " + err.Error()
	case errors.Is(err, syscall.EROFS):
		return "the state disk is read-only: " + err.Error()
	}
	return ""
}

// unwritable says why the state disk refuses a small write, or "".
func (m *Manager) unwritable() string {
	f, err := os.CreateTemp(m.opt.QuarantineDir, ".kiln-probe-*")
	if err == nil {
		_, err = f.Write(make([]byte, 4096))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		_ = os.Remove(f.Name())
	}
	if err != nil {
		if why := diskFault(err); why != "" {
			return why
		}
		return fmt.Sprintf("cannot write to the state disk: %v", err)
	}
	return ""
}
