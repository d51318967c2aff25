package monitor

// statistics is what the watch needs of the detection statistics (package
// detect): a detector and a paired test per live model, restored from their
// persisted state (nil: fresh), and the post-alarm decision.
type statistics interface {
	detector(spec pipelineSpec, state []byte) (detector, error)
	paired(spec pipelineSpec, state []byte) (pairedTest, error)
	// decide returns "rollback", "drift" or "" (inconclusive: keep
	// collecting) from the post-alarm discordant rows, with the numbers.
	decide(liveOnly, standbyOnly int64) (verdict string, details map[string]string)
}

type detector interface {
	// observe takes one label of the live model: right or wrong, and its
	// true class (per-class streams). fired reports an alarm.
	observe(correct bool, class string) (fired bool, by string, details map[string]string)
	state() ([]byte, error)
}

type pairedTest interface {
	// observe takes one discordant row (exactly one of the two was right);
	// reject reports that the standby is better, at any stopping time.
	observe(liveRight, standbyRight bool) (reject bool, details map[string]string)
	state() ([]byte, error)
}
