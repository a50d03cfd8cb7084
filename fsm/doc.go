// Package fsm owns raftgate's replicated state: sessions, their staged and
// active configuration, the cluster-wide route-ID counter and the table of
// recent request IDs that makes forwarded writes exactly-once.
//
// Every change arrives as a Command in the Raft log. Apply is deterministic:
// times, session IDs and request IDs are stamped into the command by the
// node that proposed it, and nothing here reads a clock, draws a random
// number or lets map order leak into a result. BuildTable is the pure
// function from the active configuration to the routing table the proxy
// serves.
//
// The package imports nothing else of raftgate.
package fsm
