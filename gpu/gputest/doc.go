// Package gputest builds go-nvml mock servers that answer every NVML call
// package gpu makes, with fixed UUIDs and readings a test controls, and an
// EventSet a test feeds XID events through. go-nvml's own mocks
// (mock/dgxa100, dgxh100) leave telemetry, ECC and events unset (calling
// them panics) and give random UUIDs, which would make golden files
// impossible.
//
// It needs cgo, as go-nvml does; without cgo the package is empty.
package gputest
