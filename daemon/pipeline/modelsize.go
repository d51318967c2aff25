package pipeline

import (
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/kiln-edge/kiln/daemon/config"
)

// checkModelSize fails a run whose /opt/ml/model holds more than max bytes
// (train.max_model_size; 0 is no cap) before any of it is copied into the
// blob store: a runaway trainer must not fill the state disk twice. The walk
// stops at the first byte over the cap, so a huge model costs one stat per
// file up to there. The trainer has exited: its workspace no longer changes.
func checkModelSize(dir string, max config.Bytes) error {
	if max <= 0 {
		return nil
	}
	var total int64
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if total += fi.Size(); total > int64(max) {
			return fmt.Errorf("the model in /opt/ml/model is over train.max_model_size %s (%s and counting); not stored", max, config.Bytes(total))
		}
		return nil
	})
	return err
}
