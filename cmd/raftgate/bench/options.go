package bench

import (
	"io"
	"log/slog"
	"time"
)

// Options configure every sub-benchmark; zero fields take the defaults
// of Defaults (or QuickDefaults with Quick).
type Options struct {
	// Binary is the raftgate executable started for nodes and backends.
	Binary string
	// Dir is where data, configs and logs go; empty makes a temporary
	// directory that is removed afterwards.
	Dir string
	// Quick selects a CI-sized run.
	Quick bool
	// Progress receives one line per phase; nil discards.
	Progress io.Writer
	Log      *slog.Logger

	// proxy
	Threads  int
	Conns    int
	Duration time.Duration // per load round
	Rounds   int
	Load     string   // "wrk", "go" or "" (wrk when installed)
	Backend  string   // "process" (default) or "inprocess"
	Peers    []string // of nginx, haproxy, caddy; nil: every installed one
	BodySize int

	// control
	Clients         []int
	ControlDuration time.Duration

	// failover
	Kills   int
	Writers int

	// propagation
	Samples int

	// scale
	Sizes    []int
	Sessions int
}

// withDefaults fills zero fields.
func (o Options) withDefaults() Options {
	def := func(v *int, full, quick int) {
		if *v == 0 {
			*v = full
			if o.Quick {
				*v = quick
			}
		}
	}
	defD := func(v *time.Duration, full, quick time.Duration) {
		if *v == 0 {
			*v = full
			if o.Quick {
				*v = quick
			}
		}
	}
	def(&o.Threads, 2, 2)
	def(&o.Conns, 64, 16)
	defD(&o.Duration, 4*time.Second, time.Second)
	def(&o.Rounds, 3, 1)
	def(&o.BodySize, 64, 64)
	if o.Backend == "" {
		o.Backend = "process"
	}
	if o.Clients == nil {
		o.Clients = []int{1, 16, 64}
		if o.Quick {
			o.Clients = []int{1, 4}
		}
	}
	defD(&o.ControlDuration, 4*time.Second, time.Second)
	def(&o.Kills, 10, 1)
	def(&o.Writers, 8, 2)
	def(&o.Samples, 200, 10)
	if o.Sizes == nil {
		o.Sizes = []int{1_000, 10_000, 100_000}
		if o.Quick {
			o.Sizes = []int{100, 1_000}
		}
	}
	def(&o.Sessions, 10_000, 100)
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o
}
