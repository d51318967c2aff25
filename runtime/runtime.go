// Package runtime is kiln's only door to containerd. It is told what to run
// and what should exist; it never reads kiln's store.
//
// Everything kiln creates lives in its own containerd namespace (default
// "kiln"), so kiln never sees or touches a machine's other containers, and
// tests use a namespace of their own.
//
// The connection is lazy: containerd may be down when kilnd starts (the unit
// only Wants= it), and every call reconnects through gRPC's backoff, so kilnd
// stays up, reports containerd as unreachable, and recovers on its own.
package runtime

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/containerd/containerd/v2/client"
)

// Runtime is a handle on one containerd namespace.
type Runtime struct {
	address   string
	namespace string
	log       *slog.Logger
	c         *client.Client
}

// New prepares a client for the containerd at address; it does not dial yet.
func New(address, namespace string, log *slog.Logger) (*Runtime, error) {
	c, err := client.New(address, client.WithDefaultNamespace(namespace))
	if err != nil {
		return nil, fmt.Errorf("containerd client for %s: %w", address, err)
	}
	return &Runtime{address: address, namespace: namespace, log: log, c: c}, nil
}

// Address is the containerd socket this runtime talks to.
func (r *Runtime) Address() string { return r.address }

// Namespace is kiln's containerd namespace.
func (r *Runtime) Namespace() string { return r.namespace }

// Version asks containerd for its version; it fails when containerd cannot be
// reached before ctx ends, which is how callers probe reachability.
func (r *Runtime) Version(ctx context.Context) (string, error) {
	v, err := r.c.Version(ctx)
	if err != nil {
		if ctx.Err() != nil {
			// gRPC's own wording here is long and says nothing more.
			return "", fmt.Errorf("containerd at %s is unreachable: %w", r.address, ctx.Err())
		}
		return "", fmt.Errorf("containerd at %s: %w", r.address, err)
	}
	return v.Version, nil
}

// Close drops the connection. Containers and tasks keep running: closing the
// client is never a reason to stop them.
func (r *Runtime) Close() error { return r.c.Close() }
