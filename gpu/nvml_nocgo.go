//go:build !cgo

package gpu

import (
	"context"
	"log/slog"
)

// nvmlState is empty without cgo: go-nvml does not build, so the Manager is
// always the null inventory.
type nvmlState struct{}

// Open returns the null inventory: this build has no NVML (built without
// cgo).
func Open(log *slog.Logger, opt Options) *Manager {
	m := newManager(log, opt)
	m.log.Info("built without cgo: no NVML, running CPU-only")
	return m
}

// Start does nothing: the null inventory has nothing to watch.
func (m *Manager) Start(ctx context.Context) error { return nil }

// Close does nothing.
func (m *Manager) Close() error { return nil }
