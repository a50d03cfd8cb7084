package proxy

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestTestBackend(t *testing.T) {
	ok := newBackend(t, "a")
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }))
	defer tlsSrv.Close()
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	ctx := context.Background()

	r := TestBackend(ctx, ok.URL, 5*time.Second)
	if !r.Reachable || r.StatusCode != 200 || r.TLSValid != nil || r.Error != "" {
		t.Errorf("http: %+v", r)
	}
	r = TestBackend(ctx, tlsSrv.URL, 5*time.Second)
	if !r.Reachable || r.StatusCode != 204 || r.TLSValid == nil || *r.TLSValid {
		t.Errorf("self-signed https: %+v", r)
	}
	r = TestBackend(ctx, deadURL, 5*time.Second)
	raw, _ := json.Marshal(r)
	if string(raw) != `{"reachable":false,"error":"connection refused"}` {
		t.Errorf("refused: %s", raw)
	}
	if r := TestBackend(ctx, "ftp://x", time.Second); r.Reachable || r.Error == "" {
		t.Errorf("bad scheme: %+v", r)
	}
}
