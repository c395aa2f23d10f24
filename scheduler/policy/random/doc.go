// Package random is the random policy: a uniformly random order of the
// candidates, drawn from the scheduler's seeded source (deterministic in the
// simulator).
package random
