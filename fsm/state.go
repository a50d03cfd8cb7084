package fsm

import "sort"

// State is the whole replicated state machine: every session and the
// cluster-wide counters. Only Apply and Restore change it.
type State struct {
	Sessions map[string]*Session `json:"sessions"`
	// NextRoute is the number the next route ID takes ("r" + NextRoute).
	NextRoute uint64 `json:"next_route"`
	// Requests remembers the results of recent writes by request ID, so a
	// write retried after a leader change is applied exactly once.
	Requests *RequestTable `json:"requests"`

	// byInstance indexes live sessions by service and instance; derived.
	byInstance map[string]string
	// owners indexes active domain+path keys to the sessions serving them
	// and their route counts; derived, used by the takeover check.
	owners map[string]map[string]int
}

// NewState returns an empty state.
func NewState() *State {
	s := &State{Sessions: make(map[string]*Session), NextRoute: 1, Requests: NewRequestTable(DefaultRequestTableSize)}
	s.reindex()
	return s
}

// sortedSessionIDs lists session IDs in order, so nothing that iterates
// sessions depends on map order.
func (s *State) sortedSessionIDs() []string {
	ids := make([]string, 0, len(s.Sessions))
	for id := range s.Sessions {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// reindex rebuilds the derived indexes after Restore.
func (s *State) reindex() {
	s.byInstance = make(map[string]string, len(s.Sessions))
	s.owners = make(map[string]map[string]int)
	for id, sess := range s.Sessions {
		s.byInstance[instanceKey(sess.Service, sess.Instance)] = id
		s.addOwner(sess, sess.Active.Routes)
	}
}

func instanceKey(service, instance string) string { return service + "\x00" + instance }

func ownerKey(domain, path string) string { return domain + "\x00" + path }

func (s *State) addOwner(sess *Session, routes []Route) {
	for _, r := range routes {
		for _, d := range r.Domains {
			k := ownerKey(d, r.Path)
			m := s.owners[k]
			if m == nil {
				m = make(map[string]int)
				s.owners[k] = m
			}
			m[sess.ID]++
		}
	}
}

func (s *State) removeOwner(sess *Session, routes []Route) {
	for _, r := range routes {
		for _, d := range r.Domains {
			k := ownerKey(d, r.Path)
			if m := s.owners[k]; m != nil {
				if m[sess.ID]--; m[sess.ID] <= 0 {
					delete(m, sess.ID)
				}
				if len(m) == 0 {
					delete(s.owners, k)
				}
			}
		}
	}
}

// DefaultRequestTableSize is how many recent request IDs the FSM remembers.
// A retry arrives within seconds of its first try; ten thousand writes of
// headroom covers far more than one hold timeout at the target write rate.
const DefaultRequestTableSize = 10000

// RequestTable is a bounded FIFO of recent request IDs and their results.
type RequestTable struct {
	Size    int               `json:"size"`
	Order   []string          `json:"order"` // oldest first
	Results map[string]Result `json:"results"`
}

// NewRequestTable returns an empty table remembering size requests.
func NewRequestTable(size int) *RequestTable {
	return &RequestTable{Size: size, Results: make(map[string]Result)}
}

// Lookup returns the stored result of request id.
func (t *RequestTable) Lookup(id string) (Result, bool) {
	r, ok := t.Results[id]
	return r, ok
}

// Record stores the result of request id, forgetting the oldest when full.
func (t *RequestTable) Record(id string, r Result) {
	if id == "" {
		return
	}
	if _, ok := t.Results[id]; ok {
		return
	}
	for len(t.Order) >= t.Size && len(t.Order) > 0 {
		delete(t.Results, t.Order[0])
		// Reslicing keeps this O(1); append copies the live tail into a
		// fresh array whenever capacity runs out, so memory stays bounded.
		t.Order = t.Order[1:]
	}
	t.Order = append(t.Order, id)
	t.Results[id] = r
}
