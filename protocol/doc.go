// Package protocol owns the control port (81) of a raftgate node: framing
// of the line protocol of PROTOCOL.md (16 KiB lines with recovery, CR
// stripping, pipelining, idle and per-line deadlines), parsing and
// validating every command before anything is proposed to the replicated
// log, turning each command into one fsm.Command through the Cluster
// interface, and writing exactly one response per command plus the
// asynchronous lines (EVENT, MAINT_OK, SHUTDOWN) of the sessions attached
// to its connections. It holds no replicated state of its own: sessions
// and routes live in the fsm package, and which node a command runs on is
// the cluster package's business. The Go client is the subpackage client.
package protocol
