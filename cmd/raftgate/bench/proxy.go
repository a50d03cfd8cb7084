package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/raftgate/raftgate/cmd/raftgate/localcluster"
)

// proxyTarget is one thing the load generator hits.
type proxyTarget struct {
	name string
	url  string
	host string
	pid  int // process whose peak RSS is reported; 0: none of its own
	res  []loadResult
	rss  int64
}

const benchHost, featuresHost = "bench.test", "features.test"

// Proxy compares raftgate's data plane with a direct connection to the
// backend and with every installed peer (nginx, haproxy, caddy), each set
// up equivalently, under the same load generator, in interleaved rounds.
func Proxy(ctx context.Context, o Options) (*Report, error) {
	o = o.withDefaults()
	rep := newReport("proxy", "requests/s, latency and peak memory of raftgate vs direct and peers")
	start := time.Now()
	dir, cleanup, err := workDir(o.Dir, "proxy")
	if err != nil {
		return nil, err
	}
	defer cleanup()
	gen, err := pickGenerator(o.Load)
	if err != nil {
		return nil, err
	}
	spec := loadSpec{Threads: o.Threads, Conns: o.Conns, Duration: o.Duration}
	for k, v := range map[string]string{"generator": gen.name(), "threads": fmt.Sprint(o.Threads),
		"connections": fmt.Sprint(o.Conns), "duration": o.Duration.String(), "rounds": fmt.Sprint(o.Rounds),
		"body_bytes": fmt.Sprint(o.BodySize), "backend": o.Backend} {
		rep.Params[k] = v
	}

	var procs []*proc
	defer func() {
		for _, p := range procs {
			p.stop(5 * time.Second)
		}
	}()
	ports, err := freePorts(12)
	if err != nil {
		return nil, err
	}
	addr := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", ports[i]) }

	// The backend.
	backend := addr(0)
	direct := &proxyTarget{name: "direct", url: "http://" + backend + "/bench"}
	if o.Backend == "inprocess" {
		ln, err := net.Listen("tcp", backend)
		if err != nil {
			return nil, fmt.Errorf("backend: %w", err)
		}
		bctx, stop := context.WithCancel(ctx)
		defer stop()
		go func() { _ = serveBackend(bctx, ln, o.BodySize) }()
	} else {
		p, err := startProc("backend", filepath.Join(dir, "backend.log"), nil, o.Binary, "bench", "backend", "--addr", backend, "--body", fmt.Sprint(o.BodySize))
		if err != nil {
			return nil, err
		}
		procs = append(procs, p)
		if err := waitTCP(ctx, backend, 10*time.Second, p); err != nil {
			return nil, err
		}
		direct.pid = p.pid()
	}
	fmt.Fprintf(o.Progress, "proxy: backend on %s (%s)\n", backend, o.Backend)

	// raftgate: one node, one plain route and one with every data-plane
	// feature of issue 4 switched on.
	rg, err := startRaftgateOne(ctx, o, dir, addr(1), addr(2), addr(3), addr(4), addr(5), addr(6))
	if err != nil {
		return nil, err
	}
	procs = append(procs, rg)
	if err := configureRaftgate(ctx, addr(2), addr(1), "http://"+backend); err != nil {
		return nil, fmt.Errorf("configure raftgate (log %s): %w", filepath.Join(dir, "raftgate.log"), err)
	}
	targets := []*proxyTarget{direct,
		{name: "raftgate", url: "http://" + addr(1) + "/bench", host: benchHost, pid: rg.pid()},
		{name: "raftgate+features", url: "http://" + addr(1) + "/bench", host: featuresHost, pid: rg.pid()},
	}

	// Peers.
	want := o.Peers
	if want == nil {
		want = []string{"nginx", "haproxy", "caddy"}
	}
	for i, peer := range want {
		port := addr(7 + i)
		p, err := startPeer(ctx, peer, dir, port, backend)
		if err != nil {
			rep.note("%s not measured: %v", peer, err)
			fmt.Fprintf(o.Progress, "proxy: %s not measured: %v\n", peer, err)
			continue
		}
		procs = append(procs, p)
		targets = append(targets, &proxyTarget{name: peer, url: "http://" + port + "/bench", host: benchHost, pid: p.pid()})
	}
	for _, t := range targets {
		if err := waitOK(ctx, t.url, t.host, 15*time.Second); err != nil {
			return nil, fmt.Errorf("%s does not serve: %w", t.name, err)
		}
	}

	// Peak RSS: VmHWM is itself a high-water mark, but polling also
	// catches worker processes that a master replaces.
	pctx, stopPoll := context.WithCancel(ctx)
	var pollWG sync.WaitGroup
	var rssMu sync.Mutex
	pollWG.Add(1)
	go func() {
		defer pollWG.Done()
		for {
			rssMu.Lock()
			for _, t := range targets {
				if t.pid != 0 {
					t.rss = max(t.rss, peakRSS(t.pid))
				}
			}
			rssMu.Unlock()
			select {
			case <-pctx.Done():
				return
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()

	// Warm-up (connection pools, JIT-free but cache-warm), then rounds
	// A B C D, A B C D... so slow drift hits every target alike.
	warm := loadSpec{Threads: o.Threads, Conns: o.Conns, Duration: time.Second}
	for _, t := range targets {
		if _, err := gen.run(ctx, t.url, t.host, warm); err != nil {
			stopPoll()
			pollWG.Wait()
			return nil, fmt.Errorf("warm-up of %s: %w", t.name, err)
		}
	}
	for r := 0; r < o.Rounds; r++ {
		for _, t := range targets {
			res, err := gen.run(ctx, t.url, t.host, spec)
			if err != nil {
				stopPoll()
				pollWG.Wait()
				return nil, fmt.Errorf("round %d of %s: %w", r+1, t.name, err)
			}
			t.res = append(t.res, res)
			fmt.Fprintf(o.Progress, "proxy: round %d %-18s %8.0f req/s p50 %.2fms p99 %.2fms errors %d\n", r+1, t.name, res.RPS, res.P50ms, res.P99ms, res.Errors)
		}
	}
	stopPoll()
	pollWG.Wait()
	for _, t := range targets {
		if t.pid != 0 {
			t.rss = max(t.rss, peakRSS(t.pid))
		}
	}

	summarizeProxy(rep, targets)
	rep.Command = fmt.Sprintf("%s -t%d -c%d -d%s (%d interleaved rounds, median)", gen.name(), o.Threads, o.Conns, o.Duration, o.Rounds)
	rep.Elapsed = time.Since(start).Seconds()
	return rep, nil
}

func summarizeProxy(rep *Report, targets []*proxyTarget) {
	rep.Columns = []Column{
		{Key: "rps", Header: "req/s", Format: "%.0f"},
		{Key: "rps_min", Header: "min", Format: "%.0f"},
		{Key: "rps_max", Header: "max", Format: "%.0f"},
		{Key: "p50_ms", Header: "p50 ms", Format: "%.3f"},
		{Key: "p99_ms", Header: "p99 ms", Format: "%.3f"},
		{Key: "rss_mib", Header: "peak RSS MiB", Format: "%.1f"},
		{Key: "errors", Header: "errors", Format: "%.0f"},
		{Key: "x_raftgate", Header: "req/s ÷ raftgate", Format: "%.2f"},
		{Key: "p99_x_raftgate", Header: "p99 ÷ raftgate", Format: "%.2f"},
		{Key: "x_direct", Header: "req/s ÷ direct", Format: "%.2f"},
	}
	rep.Charts = []Chart{{Key: "rps", Title: "requests/s (higher is better)"}, {Key: "p99_ms", Title: "p99 latency, ms (lower is better)"}, {Key: "rss_mib", Title: "peak RSS, MiB"}}
	vals := map[string]map[string]float64{}
	for _, t := range targets {
		var rps, p50, p99 []float64
		var errs float64
		for _, r := range t.res {
			rps, p50, p99 = append(rps, r.RPS), append(p50, r.P50ms), append(p99, r.P99ms)
			errs += float64(r.Errors)
		}
		m := map[string]float64{"rps": median(rps), "rps_min": quantile(rps, 0), "rps_max": maxOf(rps),
			"p50_ms": median(p50), "p99_ms": median(p99), "errors": errs}
		if t.rss > 0 {
			m["rss_mib"] = float64(t.rss) / (1 << 20)
		}
		vals[t.name] = m
	}
	rg, dr := vals["raftgate"], vals["direct"]
	for _, t := range targets {
		m := vals[t.name]
		if rg != nil {
			m["x_raftgate"] = ratio(m["rps"], rg["rps"])
			m["p99_x_raftgate"] = ratio(m["p99_ms"], rg["p99_ms"])
		}
		if dr != nil {
			m["x_direct"] = ratio(m["rps"], dr["rps"])
		}
		row := rep.addRow(t.name, m)
		if t.name == "raftgate+features" {
			row.Text = map[string]string{"rss_mib": "(same process)"}
		}
	}
	if rg == nil {
		return
	}
	if dr != nil {
		rep.Baseline["direct_rps"] = dr["rps"]
		rep.note("raftgate overhead: %.2fx the time per request of going direct (direct/raftgate req/s)", ratio(dr["rps"], rg["rps"]))
	}
	if ng := vals["nginx"]; ng != nil {
		rep.target("proxy req/s vs nginx", "≥ 0.80× nginx", fmt.Sprintf("%.2f× (%.0f vs %.0f)", rg["rps"]/ng["rps"], rg["rps"], ng["rps"]), rg["rps"] >= 0.8*ng["rps"])
		rep.target("proxy p99 vs nginx", "≤ 1.20× nginx", fmt.Sprintf("%.2f× (%.3f ms vs %.3f ms)", rg["p99_ms"]/ng["p99_ms"], rg["p99_ms"], ng["p99_ms"]), rg["p99_ms"] <= 1.2*ng["p99_ms"])
	}
	if cd := vals["caddy"]; cd != nil {
		rep.target("proxy req/s vs caddy", "≥ 1.20× caddy", fmt.Sprintf("%.2f× (%.0f vs %.0f)", rg["rps"]/cd["rps"], rg["rps"], cd["rps"]), rg["rps"] >= 1.2*cd["rps"])
	}
	if f := vals["raftgate+features"]; f != nil {
		rep.target("features overhead (issue 4)", "≥ 0.90× plain raftgate", fmt.Sprintf("%.2f× (%.0f vs %.0f)", f["rps"]/rg["rps"], f["rps"], rg["rps"]), f["rps"] >= 0.9*rg["rps"])
	}
}

// startRaftgateOne starts a single-node raftgate on the given addresses.
func startRaftgateOne(ctx context.Context, o Options, dir, httpA, control, raftA, gossip, rpc, admin string) (*proc, error) {
	p, err := startProc("raftgate", filepath.Join(dir, "raftgate.log"), nil, o.Binary, "serve",
		"--node-id", "bench", "--data-dir", filepath.Join(dir, "raftgate-data"),
		"--http-addr", httpA, "--control-addr", control, "--raft-addr", raftA, "--gossip-addr", gossip,
		"--rpc-addr", rpc, "--admin-addr", admin, "--bootstrap-expect", "1", "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	if err := waitTCP(ctx, control, 15*time.Second, p); err != nil {
		p.kill()
		return nil, err
	}
	if _, err := localcluster.WaitAgreedLeader(ctx, []string{control}, 1, 30*time.Second); err != nil {
		p.kill()
		return nil, err
	}
	return p, nil
}

// configureRaftgate registers a session with a plain route for bench.test
// and a route for features.test with a health check, a circuit breaker and
// a rate limit the load never reaches, then waits until both serve.
func configureRaftgate(ctx context.Context, control, proxyAddr, backend string) error {
	lc, err := dialLine(ctx, control)
	if err != nil {
		return err
	}
	// The connection stays open (attached) for the whole run; the process
	// exit closes it.
	s, err := lc.register("bench", "proxy")
	if err != nil {
		return err
	}
	if _, err := lc.expect(fmt.Sprintf("ROUTE_ADD|%s|%s|/|%s|0", s, benchHost, backend), "ROUTE_OK|", 10*time.Second); err != nil {
		return err
	}
	fid, err := lc.expect(fmt.Sprintf("ROUTE_ADD|%s|%s|/|%s|0", s, featuresHost, backend), "ROUTE_OK|", 10*time.Second)
	if err != nil {
		return err
	}
	for _, cmd := range []struct{ line, want string }{
		{fmt.Sprintf("HEALTH_SET|%s|%s|/health|1s|500ms", s, fid), "HEALTH_OK"},
		{fmt.Sprintf("CIRCUIT_BREAKER_SET|%s|%s|5|10s|1", s, fid), "CIRCUIT_OK"},
		{fmt.Sprintf("RATELIMIT_SET|%s|%s|1000000|1s", s, fid), "RATELIMIT_OK"},
		{"CONFIG_APPLY|" + s, "OK"},
	} {
		if _, err := lc.expect(cmd.line, cmd.want, 10*time.Second); err != nil {
			return err
		}
	}
	if err := waitOK(ctx, "http://"+proxyAddr+"/bench", benchHost, 10*time.Second); err != nil {
		return err
	}
	return waitOK(ctx, "http://"+proxyAddr+"/bench", featuresHost, 10*time.Second)
}

// startPeer writes an equivalent configuration for peer (keep-alive to the
// backend, X-Forwarded-* headers, no access log, two workers or threads
// for two CPUs) and starts it in the foreground.
func startPeer(ctx context.Context, peer, dir, listen, backend string) (*proc, error) {
	bin, err := exec.LookPath(peer)
	if err != nil {
		for _, d := range []string{"/usr/sbin", "/usr/local/sbin", "/usr/bin"} {
			if _, e := os.Stat(filepath.Join(d, peer)); e == nil {
				bin, err = filepath.Join(d, peer), nil
				break
			}
		}
		if err != nil {
			return nil, fmt.Errorf("not installed")
		}
	}
	pdir := filepath.Join(dir, peer)
	if err := os.MkdirAll(pdir, 0o755); err != nil {
		return nil, fmt.Errorf("config dir: %w", err)
	}
	var args, env []string
	var conf string
	switch peer {
	case "nginx":
		user := ""
		if os.Geteuid() == 0 {
			user = "user root;"
		}
		conf = fmt.Sprintf(`%s
daemon off;
worker_processes 2;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[2]s/body;
  proxy_temp_path %[2]s/proxy;
  fastcgi_temp_path %[2]s/fastcgi;
  uwsgi_temp_path %[2]s/uwsgi;
  scgi_temp_path %[2]s/scgi;
  upstream backend { server %[3]s; keepalive 128; }
  server {
    listen %[4]s;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
    }
  }
}
`, user, pdir, backend, listen)
		args = []string{"-p", pdir, "-c", filepath.Join(pdir, "nginx.conf"), "-e", filepath.Join(pdir, "error.log")}
	case "haproxy":
		conf = fmt.Sprintf(`global
  nbthread 2
  maxconn 8192
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  http-reuse always
frontend fe
  bind %s
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %%[req.hdr(host)]
  default_backend be
backend be
  server s1 %s
`, listen, backend)
		args = []string{"-db", "-f", filepath.Join(pdir, "haproxy.conf")}
	case "caddy":
		_, port, _ := net.SplitHostPort(listen)
		conf = fmt.Sprintf(`{
	admin off
	auto_https off
}
http://:%s {
	bind 127.0.0.1
	reverse_proxy %s {
		transport http {
			keepalive 2m
			keepalive_idle_conns 1024
			keepalive_idle_conns_per_host 128
		}
	}
}
`, port, backend)
		args = []string{"run", "--config", filepath.Join(pdir, "caddy.conf"), "--adapter", "caddyfile"}
		env = []string{"HOME=" + pdir, "XDG_DATA_HOME=" + pdir, "XDG_CONFIG_HOME=" + pdir}
	default:
		return nil, fmt.Errorf("unknown peer %q (nginx, haproxy, caddy)", peer)
	}
	name := map[string]string{"nginx": "nginx.conf", "haproxy": "haproxy.conf", "caddy": "caddy.conf"}[peer]
	if err := os.WriteFile(filepath.Join(pdir, name), []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("write %s config: %w", peer, err)
	}
	p, err := startProc(peer, filepath.Join(pdir, "out.log"), env, bin, args...)
	if err != nil {
		return nil, err
	}
	if err := waitTCP(ctx, listen, 10*time.Second, p); err != nil {
		p.kill()
		b, _ := os.ReadFile(filepath.Join(pdir, "out.log"))
		return nil, fmt.Errorf("%w: %s", err, strings.TrimSpace(string(b)))
	}
	return p, nil
}
