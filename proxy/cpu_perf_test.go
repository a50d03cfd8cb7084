package proxy

import (
	"syscall"
	"testing"
	"time"
)

// The CPU benchmarks run the same load as BenchmarkDirect/BenchmarkProxy
// but also report the process's CPU time per request (user+system, from
// getrusage). On a shared machine wall time per request swings with the
// neighbours' load, CPU time much less; cpu-ns/op of a proxy benchmark
// minus that of BenchmarkCPUDirect is the proxy's own cost per request.

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportCPU(b *testing.B, run func()) {
	start := cpuTime()
	run()
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
}

func BenchmarkCPUDirect(b *testing.B) {
	be := benchBackend(b)
	reportCPU(b, func() { loadLoop(b, be.URL+"/bench", "") })
}

func BenchmarkCPUProxy(b *testing.B) {
	reportCPU(b, func() { benchProxy(b, nil, Config{}) })
}
