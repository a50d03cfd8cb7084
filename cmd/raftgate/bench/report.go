package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// Machine describes where a report was measured.
type Machine struct {
	CPUs       int    `json:"cpus"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	CPUModel   string `json:"cpu_model"`
	Kernel     string `json:"kernel"`
	GoVersion  string `json:"go_version"`
	GOOS       string `json:"goos"`
	GOARCH     string `json:"goarch"`
	// LoadAvg is /proc/loadavg when the report started: other work on the
	// machine is the largest source of noise on shared CPUs.
	LoadAvg string `json:"loadavg,omitempty"`
}

// ThisMachine reads the CPU model and kernel from /proc where available.
func ThisMachine() Machine {
	m := Machine{
		CPUs: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0),
		GoVersion: runtime.Version(), GOOS: runtime.GOOS, GOARCH: runtime.GOARCH,
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	return m
}

// String is the one-line form printed above every table.
func (m Machine) String() string {
	model := m.CPUModel
	if model == "" {
		model = "unknown CPU"
	}
	return fmt.Sprintf("%d CPUs (%s), Linux %s, %s %s/%s, load average at start %s", m.CPUs, model, m.Kernel, m.GoVersion, m.GOOS, m.GOARCH, m.LoadAvg)
}

// Column is one column of a report table. Key names the metric in each
// row; Format is a fmt verb for the value ("%.0f"); a missing value prints
// as "-".
type Column struct {
	Key    string `json:"key"`
	Header string `json:"header"`
	Format string `json:"-"`
}

// Row is one measured subject (a proxy, a client count, a table size).
type Row struct {
	Name    string             `json:"name"`
	Metrics map[string]float64 `json:"metrics"`
	Text    map[string]string  `json:"text,omitempty"`
}

// Target is one goal of issue 5 and whether this run met it.
type Target struct {
	Name string `json:"name"`
	Want string `json:"want"`
	Got  string `json:"got"`
	Met  bool   `json:"met"`
}

// Chart names a metric to draw as bars, one bar per row.
type Chart struct {
	Key   string `json:"key"`
	Title string `json:"title"`
}

// Report is the result of one sub-benchmark.
type Report struct {
	Bench    string             `json:"bench"`
	Title    string             `json:"title"`
	Command  string             `json:"command"`
	Machine  Machine            `json:"machine"`
	Started  time.Time          `json:"started"`
	Elapsed  float64            `json:"elapsed_seconds"`
	Params   map[string]string  `json:"params,omitempty"`
	Columns  []Column           `json:"columns"`
	Rows     []Row              `json:"rows"`
	Baseline map[string]float64 `json:"baseline,omitempty"`
	Targets  []Target           `json:"targets,omitempty"`
	Notes    []string           `json:"notes,omitempty"`
	Charts   []Chart            `json:"charts,omitempty"`
}

func newReport(bench, title string) *Report {
	return &Report{Bench: bench, Title: title, Machine: ThisMachine(), Started: time.Now().UTC(), Params: map[string]string{}, Baseline: map[string]float64{}}
}

func (r *Report) addRow(name string, metrics map[string]float64) *Row {
	r.Rows = append(r.Rows, Row{Name: name, Metrics: metrics})
	return &r.Rows[len(r.Rows)-1]
}

func (r *Report) row(name string) *Row {
	for i := range r.Rows {
		if r.Rows[i].Name == name {
			return &r.Rows[i]
		}
	}
	return nil
}

func (r *Report) target(name, want, got string, met bool) {
	r.Targets = append(r.Targets, Target{Name: name, Want: want, Got: got, Met: met})
}

func (r *Report) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

// WriteText prints the report as an aligned table with its context.
func (r *Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "\n== raftgate bench %s: %s\n", r.Bench, r.Title)
	fmt.Fprintf(w, "machine: %s\n", r.Machine)
	if r.Command != "" {
		fmt.Fprintf(w, "command: %s\n", r.Command)
	}
	if len(r.Baseline) > 0 {
		fmt.Fprintf(w, "baseline (same run):")
		for _, k := range sortedKeys(r.Baseline) {
			fmt.Fprintf(w, " %s=%s", k, fmtNum(r.Baseline[k]))
		}
		fmt.Fprintln(w)
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "\t")
	for _, c := range r.Columns {
		fmt.Fprintf(tw, "%s\t", c.Header)
	}
	fmt.Fprintln(tw)
	for _, row := range r.Rows {
		fmt.Fprintf(tw, "%s\t", row.Name)
		for _, c := range r.Columns {
			fmt.Fprintf(tw, "%s\t", cell(row, c))
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	for _, t := range r.Targets {
		mark := "MET   "
		if !t.Met {
			mark = "MISSED"
		}
		fmt.Fprintf(w, "target %s %s: want %s, got %s\n", mark, t.Name, t.Want, t.Got)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	fmt.Fprintf(w, "elapsed: %.1fs\n", r.Elapsed)
}

func cell(row Row, c Column) string {
	if s, ok := row.Text[c.Key]; ok {
		return s
	}
	v, ok := row.Metrics[c.Key]
	if !ok || math.IsNaN(v) {
		return "-"
	}
	f := c.Format
	if f == "" {
		return fmtNum(v)
	}
	return fmt.Sprintf(f, v)
}

func fmtNum(v float64) string {
	switch {
	case v == math.Trunc(v) && math.Abs(v) < 1e12:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

// WriteJSON writes the report as indented JSON to path.
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report %s: %w", r.Bench, err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write report %s: %w", r.Bench, err)
	}
	return nil
}

// Valid reports an error when a metric is NaN or infinite, or when a row
// has no positive value at all: a run that measured nothing.
func (r *Report) Valid() error {
	if len(r.Rows) == 0 {
		return fmt.Errorf("%s: no rows", r.Bench)
	}
	for _, row := range r.Rows {
		pos := false
		for k, v := range row.Metrics {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return fmt.Errorf("%s: row %s: %s is %v", r.Bench, row.Name, k, v)
			}
			if v > 0 {
				pos = true
			}
		}
		if !pos {
			return fmt.Errorf("%s: row %s: no positive value", r.Bench, row.Name)
		}
	}
	return nil
}
