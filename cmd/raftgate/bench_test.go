package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// benchReport is the part of a bench JSON report the tests check.
type benchReport struct {
	Bench string `json:"bench"`
	Rows  []struct {
		Name    string             `json:"name"`
		Metrics map[string]float64 `json:"metrics"`
	} `json:"rows"`
	Targets []struct {
		Name string `json:"name"`
		Got  string `json:"got"`
	} `json:"targets"`
}

// runQuickBench runs `raftgate bench <sub> --quick` with the built binary
// for child processes and returns the decoded JSON report, after checking
// the SVG chart was written.
func runQuickBench(t *testing.T, sub string, extra ...string) benchReport {
	t.Helper()
	dir := t.TempDir()
	jsonPath, svgPath := filepath.Join(dir, sub+".json"), filepath.Join(dir, sub+".svg")
	args := append([]string{sub, "--quick", "--binary", raftgateBin, "--json", jsonPath, "--svg", svgPath}, extra...)
	var stdout, stderr bytes.Buffer
	if code := runBench(args, &stdout, &stderr); code != 0 {
		t.Fatalf("raftgate bench %s: exit %d\nstdout:\n%s\nstderr:\n%s", sub, code, stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), "== raftgate bench "+sub) {
		t.Errorf("no table printed:\n%s", stdout.String())
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var rep benchReport
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("decode %s: %v\n%s", jsonPath, err, b)
	}
	if rep.Bench != sub || len(rep.Rows) == 0 {
		t.Fatalf("report %q has %d rows", rep.Bench, len(rep.Rows))
	}
	svg, err := os.ReadFile(svgPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(svg, []byte("<svg")) || !bytes.Contains(svg, []byte("<rect")) || !bytes.HasSuffix(bytes.TrimSpace(svg), []byte("</svg>")) {
		t.Errorf("SVG chart is not a bar chart:\n%.300s", svg)
	}
	return rep
}

// positive asserts that every named metric of row is finite and > 0.
func positive(t *testing.T, rep benchReport, row string, keys ...string) {
	t.Helper()
	for _, r := range rep.Rows {
		if r.Name != row {
			continue
		}
		for _, k := range keys {
			v, ok := r.Metrics[k]
			if !ok || math.IsNaN(v) || math.IsInf(v, 0) || v <= 0 {
				t.Errorf("%s: row %q: %s = %v (present %v), want a finite positive number", rep.Bench, row, k, v, ok)
			}
		}
		return
	}
	t.Errorf("%s: no row %q", rep.Bench, row)
}

func zero(t *testing.T, rep benchReport, row, key string) {
	t.Helper()
	for _, r := range rep.Rows {
		if r.Name == row && r.Metrics[key] != 0 {
			t.Errorf("%s: row %q: %s = %v, want 0", rep.Bench, row, key, r.Metrics[key])
		}
	}
}

func TestBenchProxyQuick(t *testing.T) {
	// Peers are left out so the test does not depend on what is installed;
	// the built-in Go load loop is used for the same reason.
	rep := runQuickBench(t, "proxy", "--peers", "none", "--load", "go", "-d", "500ms")
	for _, row := range []string{"direct", "raftgate", "raftgate+features"} {
		positive(t, rep, row, "rps", "p50_ms", "p99_ms")
		zero(t, rep, row, "errors")
	}
	positive(t, rep, "raftgate", "rss_mib", "x_direct")
}

func TestBenchControlQuick(t *testing.T) {
	rep := runQuickBench(t, "control", "--clients", "1,4", "--control-duration", "500ms")
	for _, row := range []string{"1 client (leader)", "1 client (follower)", "4 clients (all nodes)"} {
		positive(t, rep, row, "writes_per_s", "add_p50_ms", "add_p99_ms", "apply_p50_ms", "x_limit")
	}
}

func TestBenchFailoverQuick(t *testing.T) {
	rep := runQuickBench(t, "failover", "--kills", "1", "--writers", "2")
	positive(t, rep, "leader SIGKILL", "kills", "unavail_p50_ms", "unavail_max_ms", "writes_acked", "probes")
	zero(t, rep, "leader SIGKILL", "probe_errors")
}

func TestBenchPropagationQuick(t *testing.T) {
	rep := runQuickBench(t, "propagation", "--samples", "5")
	positive(t, rep, "all nodes serve", "p50_ms", "p99_ms", "samples")
}

func TestBenchScaleQuick(t *testing.T) {
	rep := runQuickBench(t, "scale", "--sizes", "100,500", "--sessions", "50")
	for _, row := range []string{"100 routes", "500 routes"} {
		positive(t, rep, row, "apply_p50_ms", "lookup_ns", "bytes_per_route", "snapshot_mib", "restore_ms")
	}
}

func TestBenchUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := runBench([]string{"nosuch"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "unknown benchmark") {
		t.Errorf("unknown benchmark: exit %d, stderr %q", code, errb.String())
	}
	errb.Reset()
	if code := runBench(nil, &out, &errb); code != 2 || !strings.Contains(errb.String(), "Usage: raftgate bench") {
		t.Errorf("no args: exit %d, stderr %q", code, errb.String())
	}
}
