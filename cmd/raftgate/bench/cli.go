package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
)

const usage = `Usage: raftgate bench <proxy|control|failover|propagation|scale|all> [flags]

Measures raftgate on this machine against baselines measured in the same run
and prints a table per benchmark; --json and --svg also write it as JSON and
as an SVG bar chart (with 'all', one file per benchmark: name inserted before
the extension).

  proxy        requests/s, p50/p99 and peak RSS: raftgate vs direct to the
               backend and every installed nginx/haproxy/caddy (wrk if installed)
  control      ROUTE_ADD+CONFIG_APPLY throughput and latency on 3 nodes with
               1, 16, 64 clients vs the disk's fsync rate and the loopback RTT
  failover     repeated leader SIGKILLs under writers: write unavailability,
               data-plane errors on the survivors
  propagation  CONFIG_APPLY OK until every node's proxy serves the change
  scale        1k/10k/100k routes over 10k sessions: apply latency, lookup,
               memory per route, snapshot size, restore time (in-process)

Flags:
`

// Main is `raftgate bench`: it parses args, runs the named benchmark(s)
// and returns the process exit code. self is the raftgate executable used
// for child processes when --binary is not given.
func Main(args []string, self string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		newFlags(stderr, &Options{}, new(string), new(string)).PrintDefaults()
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	sub, rest := args[0], args[1:]
	if sub == "backend" {
		return runBackendCmd(rest, stdout, stderr)
	}
	var o Options
	var jsonPath, svgPath string
	fs := newFlags(stderr, &o, &jsonPath, &svgPath)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "raftgate bench: unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return 2
	}
	if o.Binary == "" {
		o.Binary = self
	}
	o.Progress = stderr
	runs := map[string]func(context.Context, Options) (*Report, error){
		"proxy": Proxy, "control": Control, "failover": Failover, "propagation": Propagation, "scale": Scale,
	}
	names := []string{sub}
	if sub == "all" {
		names = []string{"proxy", "control", "failover", "propagation", "scale"}
	} else if runs[sub] == nil {
		fmt.Fprintf(stderr, "raftgate bench: unknown benchmark %q\n\n", sub)
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	code := 0
	for _, name := range names {
		rep, err := runs[name](ctx, o)
		if err != nil {
			fmt.Fprintf(stderr, "raftgate bench %s: %v\n", name, err)
			code = 1
			continue
		}
		rep.Command = "raftgate bench " + strings.Join(args, " ") + "  # " + rep.Command
		rep.WriteText(stdout)
		if err := rep.Valid(); err != nil {
			fmt.Fprintf(stderr, "raftgate bench %s: measured nothing usable: %v\n", name, err)
			code = 1
		}
		for _, out := range []struct {
			path  string
			write func(string) error
		}{{jsonPath, rep.WriteJSON}, {svgPath, rep.WriteSVG}} {
			if out.path == "" {
				continue
			}
			p := out.path
			if len(names) > 1 {
				p = insertName(p, name)
			}
			if err := out.write(p); err != nil {
				fmt.Fprintf(stderr, "raftgate bench %s: %v\n", name, err)
				code = 1
			}
		}
	}
	return code
}

func insertName(path, name string) string {
	if i := strings.LastIndexByte(path, '.'); i > strings.LastIndexByte(path, '/') {
		return path[:i] + "-" + name + path[i:]
	}
	return path + "-" + name
}

func newFlags(stderr io.Writer, o *Options, jsonPath, svgPath *string) *flag.FlagSet {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(jsonPath, "json", "", "write the report as JSON to this file")
	fs.StringVar(svgPath, "svg", "", "write the report as an SVG bar chart to this file")
	fs.BoolVar(&o.Quick, "quick", false, "CI-sized run: short loads, few samples, small tables")
	fs.StringVar(&o.Binary, "binary", "", "raftgate executable for nodes and backends (default: this one)")
	fs.StringVar(&o.Dir, "dir", "", "keep data, configs and logs here (default: a temporary directory, removed)")
	fs.IntVar(&o.Threads, "t", 0, "proxy: load generator threads (default 2)")
	fs.IntVar(&o.Conns, "c", 0, "proxy: concurrent connections (default 64; --quick 16)")
	fs.DurationVar(&o.Duration, "d", 0, "proxy: duration of each load round (default 4s; --quick 1s)")
	fs.IntVar(&o.Rounds, "rounds", 0, "proxy: interleaved rounds per target (default 3; --quick 1)")
	fs.StringVar(&o.Load, "load", "", "proxy: load generator, wrk or go (default: wrk when installed)")
	fs.StringVar(&o.Backend, "backend", "", "proxy: backend in a child 'process' (default) or 'inprocess' in the harness")
	fs.Func("peers", "proxy: comma list of peers to compare (default nginx,haproxy,caddy when installed; 'none')", func(v string) error {
		o.Peers = []string{}
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" && p != "none" {
				o.Peers = append(o.Peers, p)
			}
		}
		return nil
	})
	fs.IntVar(&o.BodySize, "body", 0, "proxy: backend response body bytes (default 64)")
	fs.Func("clients", "control: comma list of client counts (default 1,16,64; --quick 1,4)", func(v string) error {
		ns, err := intList(v)
		o.Clients = ns
		return err
	})
	fs.DurationVar(&o.ControlDuration, "control-duration", 0, "control: duration per client count (default 4s; --quick 1s)")
	fs.IntVar(&o.Kills, "kills", 0, "failover: leader kills (default 10; --quick 1)")
	fs.IntVar(&o.Writers, "writers", 0, "failover: concurrent writers (default 8; --quick 2)")
	fs.IntVar(&o.Samples, "samples", 0, "propagation: applies measured (default 200; --quick 10)")
	fs.Func("sizes", "scale: comma list of route counts (default 1000,10000,100000; --quick 100,1000)", func(v string) error {
		ns, err := intList(v)
		o.Sizes = ns
		return err
	})
	fs.IntVar(&o.Sessions, "sessions", 0, "scale: sessions the routes are spread over (default 10000; --quick 100)")
	return fs
}

func intList(v string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("want positive integers, got %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// runBackendCmd is the hidden `raftgate bench backend` child process.
func runBackendCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench backend", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	body := fs.Int("body", 64, "response body bytes")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := RunBackend(ctx, *addr, *body, stdout); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}
