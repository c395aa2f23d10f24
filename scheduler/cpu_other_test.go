//go:build !unix

package scheduler

// processCPU is not measured here: BenchmarkPick then reports no cpu-ns/op.
func processCPU() (int64, bool) { return 0, false }
