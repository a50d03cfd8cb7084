// Package proxy is raftgate's data plane: the HTTP reverse proxy each node
// runs on its --http-addr.
//
// It owns everything that happens to a client request after it arrives:
// matching the host and path against the node's immutable routing table
// (swapped atomically by Update, read without locks), choosing a backend
// from the matched pool (load-balancing policy, drain weights, maintenance,
// health and circuit-breaker state), enforcing per-route rate limits,
// forwarding the request (headers, X-Forwarded-*, timeouts, retries,
// websockets, gzip, HTTP/2), and recording per-route statistics.
//
// All runtime state (health results, breaker states, rate-limit buckets,
// in-flight counts, statistics) belongs to this node only; callers aggregate
// across nodes through RouteStats, MergeRouteStats, BreakerStatus and
// SessionInFlight. The package imports fsm and nothing else of raftgate.
package proxy
