package pipeline

import (
	"errors"
	"fmt"
	"maps"

	"github.com/kiln-edge/kiln/storage"
)

// Request says who asks a controller to act, on what trigger, and why. People
// (through the API) and automation (the monitor, kilnd's own triggers) send the
// same commands; the actor tells the guard which rules apply (guard.go), and
// every event a command writes carries its trigger, reason and Details.
type Request struct {
	Pipeline string
	// Actor is "uid:N" for a person, ActorKilnd for automation.
	Actor string
	// Trigger is what set the command off: TriggerManual, TriggerNewData,
	// TriggerSchedule, TriggerMonitor, TriggerProbation, ... A person's
	// request without one is TriggerManual.
	Trigger string
	// Reason is one line for people, e.g. "standby better on 41 disagreeing rows".
	Reason string
	// Details are the caller's numbers (the monitor: statistic, window, both
	// accuracies, p-value); they go into the event's details as given.
	Details map[string]string
}

// ActorKilnd is the actor of automatic commands.
const ActorKilnd = "kilnd"

// Triggers kilnd itself uses; callers may name others (one word, lower case).
const (
	TriggerManual    = "manual"    // a person's command
	TriggerNewData   = "new_data"  // triggers.new_data: enough new rows after the debounce
	TriggerSchedule  = "schedule"  // triggers.schedule
	TriggerMonitor   = "monitor"   // the monitor's decision on labelled feedback
	TriggerProbation = "probation" // the monitor's label-free check after a promotion
	TriggerRetry     = "retry"     // train.retries after a failed run
)

// Automatic reports whether r comes from kilnd rather than a person.
func (r Request) Automatic() bool { return r.Actor == ActorKilnd }

// check fills a person's missing trigger and refuses a request that cannot
// be recorded honestly.
func (r Request) check() (Request, error) {
	if r.Actor == "" {
		return r, fmt.Errorf("a %s request without an actor (want uid:N or %s): %w", r.Pipeline, ActorKilnd, storage.ErrInvalid)
	}
	if r.Trigger == "" {
		if r.Automatic() {
			return r, fmt.Errorf("an automatic %s request without a trigger: %w", r.Pipeline, storage.ErrInvalid)
		}
		r.Trigger = TriggerManual
	}
	return r, nil
}

// details is what an event records of r: the caller's Details, then trigger
// and reason, then extra (kilnd's own keys win over the caller's).
func (r Request) details(extra map[string]string) map[string]string {
	out := maps.Clone(r.Details)
	if out == nil {
		out = map[string]string{}
	}
	out["trigger"] = r.Trigger
	if r.Reason != "" {
		out["reason"] = r.Reason
	}
	maps.Copy(out, extra)
	return out
}

// kilndRequest is kilnd acting on its own behalf.
func kilndRequest(pipeline, trigger, reason string) Request {
	return Request{Pipeline: pipeline, Actor: ActorKilnd, Trigger: trigger, Reason: reason}
}

// Sentinel errors, matched with errors.Is. ErrPinned, ErrCooldown, ErrBusy and
// ErrStale wrap ErrConflict, so the API answers each with 409.
var (
	ErrNoPipeline = errors.New("no such pipeline")
	ErrConflict   = errors.New("conflict")
	// ErrPinned: the pipeline is pinned; automation is off and people must
	// unpin before promoting or rolling back.
	ErrPinned = &sentinel{"pipeline pinned", ErrConflict}
	// ErrCooldown: the live model switched less than monitor.cooldown ago;
	// automatic commands wait, people may act.
	ErrCooldown = &sentinel{"cooling down", ErrConflict}
	// ErrBusy: an evaluation (or run) is in flight, or the queue holds a
	// request that outranks this one.
	ErrBusy = &sentinel{"busy", ErrConflict}
	// ErrStale: the command was about a live model that is no longer live
	// (an alarm about a model already replaced is void).
	ErrStale = &sentinel{"stale", ErrConflict}
)

type sentinel struct {
	msg    string
	parent error
}

func (s *sentinel) Error() string { return s.msg }
func (s *sentinel) Unwrap() error { return s.parent }
