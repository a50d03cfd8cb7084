package bench

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const wrkSample = `Running 4s test @ http://127.0.0.1:8080/bench
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.80ms    2.10ms  40.12ms   90.00%
    Req/Sec    18.50k     1.20k   21.00k    70.00%
  Latency Distribution
     50%  812.00us
     75%    1.50ms
     90%    3.20ms
     99%   12.34ms
  147000 requests in 4.00s, 20.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:  36750.12
Transfer/sec:      5.00MB
`

func TestParseWrk(t *testing.T) {
	r, err := parseWrk(wrkSample)
	if err != nil {
		t.Fatal(err)
	}
	if r.RPS != 36750.12 || r.P50ms != 0.812 || r.P99ms != 12.34 || r.Requests != 147000 || r.Errors != 8 {
		t.Errorf("parsed %+v", r)
	}
	if _, err := parseWrk("unable to connect to 127.0.0.1:1 Connection refused"); err == nil {
		t.Error("output without Requests/sec parsed")
	}
	r, err = parseWrk(strings.Replace(wrkSample, "12.34ms", "1.20s", 1))
	if err != nil || r.P99ms != 1200 {
		t.Errorf("seconds unit: %+v %v", r, err)
	}
}

func TestQuantile(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3}
	if q := quantile(xs, 0.5); q != 3 {
		t.Errorf("median = %v", q)
	}
	if q := quantile(xs, 0.99); q != 5 {
		t.Errorf("p99 = %v", q)
	}
	if q := quantile(xs, 0); q != 1 {
		t.Errorf("min = %v", q)
	}
	if !math.IsNaN(quantile(nil, 0.5)) {
		t.Error("quantile of nothing is not NaN")
	}
}

func sampleReport() *Report {
	r := newReport("proxy", "test <&>")
	r.Columns = []Column{{Key: "rps", Header: "req/s", Format: "%.0f"}, {Key: "p99_ms", Header: "p99", Format: "%.2f"}}
	r.addRow("direct", map[string]float64{"rps": 1000, "p99_ms": 1})
	r.addRow("raftgate", map[string]float64{"rps": 500, "p99_ms": 2})
	r.Charts = []Chart{{Key: "rps", Title: "req/s"}}
	r.target("x", "≥ 1", "0.5", false)
	return r
}

func TestReportTextJSONSVG(t *testing.T) {
	r := sampleReport()
	var b strings.Builder
	r.WriteText(&b)
	for _, want := range []string{"raftgate bench proxy", "req/s", "1000", "MISSED", "machine:"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, b.String())
		}
	}
	svg := r.SVG()
	if strings.Count(svg, "<rect") != 3 { // background + 2 bars
		t.Errorf("want 2 bars:\n%s", svg)
	}
	if strings.Contains(svg, "<&>") || !strings.Contains(svg, "&lt;&amp;&gt;") {
		t.Error("title not escaped in SVG")
	}
	dir := t.TempDir()
	if err := r.WriteJSON(filepath.Join(dir, "r.json")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "r.json")); !strings.Contains(string(b), `"rps": 500`) {
		t.Errorf("json: %s", b)
	}
	if err := r.Valid(); err != nil {
		t.Error(err)
	}
	r.Rows[1].Metrics["p99_ms"] = math.Inf(1)
	if r.Valid() == nil {
		t.Error("infinite metric accepted")
	}
}

func TestInsertName(t *testing.T) {
	for in, want := range map[string]string{"out/r.json": "out/r-scale.json", "r": "r-scale", "a.b/r": "a.b/r-scale"} {
		if got := insertName(in, "scale"); got != want {
			t.Errorf("insertName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFreePorts(t *testing.T) {
	ps, err := freePorts(12)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ps {
		if p <= 0 || seen[p] {
			t.Fatalf("bad or duplicate port in %v", ps)
		}
		seen[p] = true
	}
}
