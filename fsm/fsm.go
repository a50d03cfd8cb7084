package fsm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Notification tells local observers (the event bus, the maintenance
// watcher, waiters for an applied index) what one log entry did. It is
// delivered after the entry is applied, outside the state lock, and never
// influences the state.
type Notification struct {
	Index   uint64
	Command *Command
	Result  Result
	// Ended lists sessions this entry ended (expired, shut down, replaced).
	Ended []EndedSession
}

// EndedSession is a session that left the state, and why.
type EndedSession struct {
	Session Session
	Reason  string // "expired", "shutdown", "replaced"
}

// FSM is the raft state machine of raftgate. It implements
// raft.BatchingFSM; readers use View and the query methods.
type FSM struct {
	mu    sync.RWMutex
	state *State
	index uint64 // last applied log index
	// lastChange is the index of the last applied entry that may have
	// changed the state (every command but CmdNoop).
	lastChange uint64

	// table is the routing table of the applied state, patched after each
	// batch that changed active configuration.
	table *RoutingTable
	// provisionalUntil is the last index of a provisional table handed to
	// the proxy (PublishProvisional); applied tables older than it are not
	// published, so the proxy never goes back to an older table while the
	// node catches up. Zero when there is none.
	provisionalUntil uint64

	obsMu     sync.Mutex
	observers []func(Notification)
	tableSubs []func(*RoutingTable)

	appliedMu   sync.Mutex
	appliedCond chan struct{} // closed and replaced on every applied batch
}

// New returns an FSM with an empty state.
func New() *FSM {
	f := &FSM{state: NewState(), appliedCond: make(chan struct{})}
	f.table = BuildTable(f.state, 0)
	return f
}

// Observe registers fn to be called after every applied entry. Register
// observers before raft starts; fn must not block for long.
func (f *FSM) Observe(fn func(Notification)) {
	f.obsMu.Lock()
	defer f.obsMu.Unlock()
	f.observers = append(f.observers, fn)
}

// OnTable registers fn to receive every new routing table (and the current
// one at once).
func (f *FSM) OnTable(fn func(*RoutingTable)) {
	f.obsMu.Lock()
	f.tableSubs = append(f.tableSubs, fn)
	f.obsMu.Unlock()
	f.mu.RLock()
	t := f.table
	f.mu.RUnlock()
	fn(t)
}

// View runs fn with read access to the state. fn must not keep references
// to the state after it returns, nor change it.
func (f *FSM) View(fn func(s *State)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fn(f.state)
}

// AppliedIndex is the index of the last log entry applied.
func (f *FSM) AppliedIndex() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.index
}

// Applied returns the last applied log index and the index of the last
// applied entry that may have changed the state: the entries after it,
// up to the applied index, are no-ops, so any FSM that has applied up to
// lastChange holds the same state as this one.
func (f *FSM) Applied() (index, lastChange uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.index, f.lastChange
}

// Table returns the current routing table.
func (f *FSM) Table() *RoutingTable {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.table
}

// WaitApplied blocks until the FSM has applied index, or ctx ends.
func (f *FSM) WaitApplied(ctx context.Context, index uint64) error {
	for {
		f.appliedMu.Lock()
		ch := f.appliedCond
		f.appliedMu.Unlock()
		if f.AppliedIndex() >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("wait for applied index %d: %w", index, ctx.Err())
		}
	}
}

func (f *FSM) signalApplied() {
	f.appliedMu.Lock()
	close(f.appliedCond)
	f.appliedCond = make(chan struct{})
	f.appliedMu.Unlock()
}

// ExpiredSessions lists detached sessions idle for longer than grace at
// now (Unix nanoseconds). The leader proposes their expiry.
func (f *FSM) ExpiredSessions(now int64, grace time.Duration) []string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []string
	for _, id := range f.state.sortedSessionIDs() {
		if sessionExpired(f.state.Sessions[id], now, int64(grace)) {
			out = append(out, id)
		}
	}
	return out
}

// StaleStaged lists sessions whose staged changes saw no command for
// longer than idle at now. The leader proposes discarding them.
func (f *FSM) StaleStaged(now int64, idle time.Duration) []string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []string
	for _, id := range f.state.sortedSessionIDs() {
		s := f.state.Sessions[id]
		if s.Staged != nil && now-s.StagedAt > int64(idle) {
			out = append(out, id)
		}
	}
	return out
}

func sessionExpired(s *Session, now, grace int64) bool {
	return !s.Attachment.Attached() && now-s.LastActivity > grace
}

// Apply applies one log entry (raft.FSM).
func (f *FSM) Apply(l *raft.Log) interface{} {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies a batch of log entries and, if any of them changed
// active configuration, derives the next routing table once from the
// previous one and the sessions the batch changed (raft.BatchingFSM).
func (f *FSM) ApplyBatch(logs []*raft.Log) []interface{} {
	out := make([]interface{}, len(logs))
	notes := make([]Notification, 0, len(logs))
	f.mu.Lock()
	var dirty map[string]string // route ID -> session ID
	for i, l := range logs {
		if l.Index > f.index {
			f.index = l.Index
		}
		if l.Type != raft.LogCommand {
			out[i] = Result{}
			continue
		}
		cmd, err := DecodeCommand(l.Data)
		if err != nil {
			// An entry that cannot be decoded means a corrupt log or a
			// newer node's command type; going on would fork the state.
			panic(fmt.Sprintf("fsm: log entry %d: %v", l.Index, err))
		}
		if cmd.Type != CmdNoop {
			f.lastChange = l.Index
		}
		n := f.applyCommand(cmd, l.Index)
		for _, d := range n.dirty {
			if dirty == nil {
				dirty = make(map[string]string)
			}
			dirty[d.route] = d.session
		}
		out[i] = n.Result
		notes = append(notes, n.Notification)
	}
	var table *RoutingTable
	publish := len(dirty) > 0
	if len(dirty) > 0 {
		f.table = patchTable(f.table, f.state, dirty, f.index)
	}
	if f.provisionalUntil != 0 {
		publish = false
		if f.index >= f.provisionalUntil {
			// Caught up with the provisional table: replace it with the
			// committed one even if this batch changed nothing. The
			// subscribers hold the provisional table, not the base of
			// this one's delta, so they recompile it whole.
			f.provisionalUntil = 0
			publish = true
			t := *f.table
			t.Index, t.Gen, t.Delta = f.index, tableGen.Add(1), nil
			f.table = &t
		}
	}
	if publish {
		table = f.table
	}
	f.mu.Unlock()

	f.obsMu.Lock()
	observers, tableSubs := f.observers, f.tableSubs
	f.obsMu.Unlock()
	// The proxy swaps in the new table before anyone waiting for this
	// index wakes up: an acknowledged CONFIG_APPLY is already served here.
	if table != nil {
		for _, fn := range tableSubs {
			fn(table)
		}
	}
	f.signalApplied()
	for _, n := range notes {
		for _, fn := range observers {
			fn(n)
		}
	}
	return out
}

// snapshotData is the serialized form of the whole state.
type snapshotData struct {
	Index uint64 `json:"index"`
	State *State `json:"state"`
}

// Snapshot captures the state for raft (raft.FSM). Encoding happens under
// the read lock so the bytes are one consistent point in the log.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	b, err := f.SnapshotBytes()
	if err != nil {
		return nil, err
	}
	return &fsmSnapshot{data: b}, nil
}

// SnapshotBytes returns the encoded state. Two FSMs that applied the same
// log return identical bytes.
func (f *FSM) SnapshotBytes() ([]byte, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	b, err := json.Marshal(snapshotData{Index: f.index, State: f.state})
	if err != nil {
		return nil, fmt.Errorf("encode snapshot: %w", err)
	}
	return b, nil
}

// Restore replaces the state with a snapshot (raft.FSM). It decodes into a
// fresh state and swaps it in, so readers never see a half-restored state.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var d snapshotData
	if err := json.NewDecoder(rc).Decode(&d); err != nil {
		return fmt.Errorf("decode snapshot: %w", err)
	}
	if d.State == nil {
		return fmt.Errorf("decode snapshot: no state")
	}
	if d.State.Sessions == nil {
		d.State.Sessions = make(map[string]*Session)
	}
	if d.State.Requests == nil {
		d.State.Requests = NewRequestTable(DefaultRequestTableSize)
	}
	if d.State.Requests.Results == nil {
		d.State.Requests.Results = make(map[string]Result)
	}
	d.State.reindex()
	table := BuildTable(d.State, d.Index)
	f.mu.Lock()
	f.state = d.State
	f.index = d.Index
	f.lastChange = d.Index
	f.table = table
	publish := f.provisionalUntil == 0 || d.Index >= f.provisionalUntil
	if publish {
		f.provisionalUntil = 0
	}
	f.mu.Unlock()
	f.obsMu.Lock()
	tableSubs := f.tableSubs
	f.obsMu.Unlock()
	if publish {
		for _, fn := range tableSubs {
			fn(table)
		}
	}
	f.signalApplied()
	return nil
}

type fsmSnapshot struct{ data []byte }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s.data); err != nil {
		sink.Cancel()
		return fmt.Errorf("write snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}

// PublishProvisional hands the table subscribers (the proxy) the routing
// table that the state plus logs would give, without changing the state.
//
// A restarted node restores its last snapshot but applies the log entries
// after it only once a leader tells it they are committed. Without a quorum
// that never happens, and the node would serve an older table than the one
// it served before the restart. Serving the table of its local log instead
// keeps invariant 5 for restarted nodes; the cost is that an entry the node
// had appended but that was never committed can be served until the node
// reaches a leader, which replaces the table with the committed one.
// It returns the index of the table published, or 0 when there was nothing
// newer than the applied state.
func (f *FSM) PublishProvisional(logs []*raft.Log) (uint64, error) {
	if len(logs) == 0 {
		return 0, nil
	}
	b, err := f.SnapshotBytes()
	if err != nil {
		return 0, err
	}
	scratch := New()
	if err := scratch.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		return 0, fmt.Errorf("provisional state: %w", err)
	}
	scratch.ApplyBatch(logs)
	t := scratch.Table()
	last := logs[len(logs)-1].Index
	if f.AppliedIndex() >= last {
		return 0, nil
	}
	t2 := *t
	// A fresh generation and no delta: no subscriber holds its base.
	t2.Index, t2.Gen, t2.Delta = last, tableGen.Add(1), nil
	f.mu.Lock()
	f.provisionalUntil = last
	f.mu.Unlock()
	f.obsMu.Lock()
	subs := f.tableSubs
	f.obsMu.Unlock()
	for _, fn := range subs {
		fn(&t2)
	}
	return last, nil
}
