//go:build unix

package main

import (
	"syscall"
	"testing"
	"time"
)

// childCPU returns the CPU time (user and system) of the waited-for child
// processes so far, from getrusage(RUSAGE_CHILDREN).
func childCPU(b *testing.B) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuTimed runs fn, which must start and wait for its subprocesses, and
// adds the CPU time they used to *cpu. The benchmarks run one subprocess
// at a time, so the difference is theirs alone.
func cpuTimed(b *testing.B, cpu *time.Duration, fn func()) func() {
	return func() {
		before := childCPU(b)
		fn()
		*cpu += childCPU(b) - before
	}
}

// reportCPU reports the subprocesses' CPU time per op, ours and the
// reference's, in milliseconds: the steadier measure when other jobs share
// the cores.
func reportCPU(b *testing.B, ours, ref time.Duration, refName string) {
	b.Helper()
	n := float64(b.N)
	b.ReportMetric(float64(ours.Microseconds())/1000/n, "cpu-ms")
	b.ReportMetric(float64(ref.Microseconds())/1000/n, refName+"-cpu-ms")
}
