//go:build unix

package scheduler

import "syscall"

// processCPU is the CPU time the process has used, user and system, every
// thread (the garbage collector's workers too), in nanoseconds.
func processCPU() (int64, bool) {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0, false
	}
	return ru.Utime.Nano() + ru.Stime.Nano(), true
}
