package bench

import (
	"context"
	"testing"
)

// BenchmarkScaleSetup prices building a table of 10,000 routes over 10,000
// sessions through the FSM and the proxy; run it with -cpuprofile to see
// what dominates apply latency at scale.
func BenchmarkScaleSetup(b *testing.B) {
	for b.Loop() {
		if _, err := scaleOne(context.Background(), 10_000, 10_000, true); err != nil {
			b.Fatal(err)
		}
	}
}
