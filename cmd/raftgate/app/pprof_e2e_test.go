package app

import (
	"net/http"
	"testing"
)

// TestPprofOnlyWhenAsked checks that Go profiles are served on the admin
// address only with --pprof.
func TestPprofOnlyWhenAsked(t *testing.T) {
	for _, on := range []bool{false, true} {
		tc := startCluster(t, 1, func(c *Config) { c.Pprof = on })
		resp, err := http.Get("http://" + tc.nodes[0].AdminAddr() + "/debug/pprof/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if want := map[bool]int{false: http.StatusNotFound, true: http.StatusOK}[on]; resp.StatusCode != want {
			t.Fatalf("pprof=%v: /debug/pprof/ answered %d, want %d", on, resp.StatusCode, want)
		}
		tc.stop()
	}
}
