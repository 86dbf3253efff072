package board

import "slices"

// Features a board may have beyond Features (every board's), from probes
// of the installed emulator.
const (
	FeatureSnapshot = "snapshot"
	// FeatureDeterministic: the board runs on the instruction counter.
	FeatureDeterministic = "deterministic"
	// FeatureRecord: an execution can be recorded and replayed.
	FeatureRecord = "record"
	// FeatureReverseDebug: a replay's debugger can run backwards (the
	// recording holds an initial snapshot, so the board must snapshot).
	FeatureReverseDebug = "reverse-debug"
)

// Has says whether the board offers feature.
func (b Board) Has(feature string) bool { return slices.Contains(b.Features, feature) }
