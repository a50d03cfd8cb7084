// Package cluster owns everything that makes several raftgate nodes one
// service: the hashicorp/raft group (bolt log and stable store, file
// snapshots, a TCP transport), memberlist gossip for discovery and failure
// detection, bootstrap, the leader's membership reconciliation, forwarding
// of writes from followers to the leader over a small internal RPC,
// linearizable reads, and the session leases of ARCHITECTURE.md invariant 7.
//
// The replicated state machine itself is fsm.FSM; this package only moves
// fsm.Command values into the log and tells callers when the local node has
// applied them. Other layers reach other nodes through RegisterHandler,
// Call and FanOut. DESIGN.md beside this file explains the choices.
package cluster
