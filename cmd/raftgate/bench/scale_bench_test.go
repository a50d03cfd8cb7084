package bench

import (
	"context"
	"strconv"
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

// BenchmarkScaleApply prices one CONFIG_APPLY of one extra route at 1,000
// and 100,000 routes over 10,000 sessions (fsm apply, table patch and the
// proxy's update); the scale target wants the second within 2× the first.
func BenchmarkScaleApply(b *testing.B) {
	for _, routes := range []int{1_000, 100_000} {
		b.Run(strconv.Itoa(routes), func(b *testing.B) {
			fx, err := newScaleFixture(context.Background(), routes, 10_000)
			if err != nil {
				b.Fatal(err)
			}
			defer fx.p.Close()
			k := 0
			for b.Loop() {
				b.StopTimer()
				s, err := fx.stageExtraRoute(k)
				if err != nil {
					b.Fatal(err)
				}
				k++
				b.StartTimer()
				if err := fx.applyStaged(s); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
