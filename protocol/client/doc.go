// Package client is the Go client of raftgate's control protocol (port 81,
// see docs/PROTOCOL.md): it registers a service session with any node of a
// cluster, stages and applies routes and settings, receives events, and
// keeps the session attached across node failures.
//
// The package imports nothing else of raftgate and nothing outside the
// standard library, so applications can vendor it alone.
//
// # Connections and concurrency
//
// A Client holds one TCP connection at a time and is safe for concurrent
// use. Commands from many goroutines are pipelined on that connection; the
// protocol answers every command exactly once and in order, so the client
// matches responses to commands with a FIFO queue. A caller whose context
// ends stops waiting, but its command stays queued so that its response,
// when it comes, is discarded instead of being handed to the next caller.
//
// Asynchronous lines are recognized by their text and never consumed as a
// response: EVENT|type|json (delivered to OnEvent handlers), MAINT_OK|target
// and SHUTDOWN. The one ambiguous line is the maintenance timeout, an ERROR
// line: the client treats the exact line
//
//	ERROR|timeout waiting for maintenance page to become reachable
//
// as asynchronous, always, because no command answers with that text
// synchronously. Any other ERROR line is the response to the oldest
// waiting command.
//
// # Failover
//
// When the connection breaks, or the node announces SHUTDOWN, a client
// made with New reconnects at once to another known address (the configured
// ones plus the control addresses learned from CLUSTER_STATUS), rounds over
// all addresses separated by a jittered, doubling, bounded pause, and sends
// RECONNECT with its session ID. On OK the session (its routes, staged
// changes and subscriptions, which live in the cluster) simply continues.
// On REREGISTER the session has expired: the client registers again, gets a
// new session ID and calls the OnReregister hooks, where the application
// re-stages its routes.
//
// Commands that were in flight on the broken connection fail with an error
// wrapping ErrConnectionLost; their outcome is unknown and the client does
// not retry them, because plain commands carry no request ID the server
// could deduplicate a second copy by (the protocol's optional txn- IDs only
// echo an ID back, they do not promise deduplication). Commands that could
// not be written at all wait for the reconnect, bounded by their context,
// and then fail with ErrUnavailable, which is always safe to retry.
//
// # Errors
//
// An ERROR|msg answer becomes a *ServerError; IsNotFound, IsSessionNotFound,
// IsRouteNotFound, IsNoLeader and friends match the common messages. Fields
// holding the framing characters '|', CR or LF are refused with a
// *FieldError before anything is sent. Durations are sent in Go syntax
// ("1m30s"). JSON fields are compacted and any '|' inside them is written as
// the equivalent JSON escape \u007c, so lines always split cleanly.
package client
