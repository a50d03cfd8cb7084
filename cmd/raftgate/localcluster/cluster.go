package localcluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Cluster is a set of node slots started from one binary. Each node joins
// the gossip addresses of all the others and bootstraps once it sees
// len(Nodes) servers.
type Cluster struct {
	// Binary is the raftgate executable.
	Binary string
	// Extra are flags appended to every node's serve command by
	// StartNode and StartAll.
	Extra []string
	// Nodes are the slots, in start order; callers may append slots
	// made with NewNode (a node joining later, say).
	Nodes []*Node
}

// New lays out n nodes named node1..nodeN from base (see LayoutPorts),
// with data and logs under dir; it starts nothing.
func New(dir string, base, n int, binary string) *Cluster {
	ports := make([]Ports, n)
	for i := range ports {
		ports[i] = LayoutPorts(base, i)
	}
	return NewWithPorts(dir, "node", ports, binary)
}

// NewWithPorts makes one node per entry of ports, named prefix1,
// prefix2, ..., with data and logs under dir; it starts nothing.
func NewWithPorts(dir, prefix string, ports []Ports, binary string) *Cluster {
	c := &Cluster{Binary: binary}
	for i, p := range ports {
		c.Nodes = append(c.Nodes, NewNode(dir, fmt.Sprintf("%s%d", prefix, i+1), p))
	}
	for _, nd := range c.Nodes {
		nd.Expect = len(c.Nodes)
		for _, o := range c.Nodes {
			if o != nd {
				nd.Join = append(nd.Join, o.Gossip)
			}
		}
	}
	return c
}

// StartNode starts (or restarts, on the same data directory) node i.
func (c *Cluster) StartNode(i int) error {
	return c.Nodes[i].Start(c.Binary, c.Extra)
}

// StartAll starts every node that is not running, in order, and stops at
// the first failure; the caller stops what did start with StopAll.
func (c *Cluster) StartAll() error {
	for i, nd := range c.Nodes {
		if nd.Running() {
			continue
		}
		if err := c.StartNode(i); err != nil {
			return err
		}
	}
	return nil
}

// Index returns the position of the node with this ID, or -1.
func (c *Cluster) Index(id string) int {
	for i, nd := range c.Nodes {
		if nd.ID == id {
			return i
		}
	}
	return -1
}

// Leader asks every running node once and returns the index of the leader
// they all agree on; it fails unless each sees a leader and at least want
// alive members.
func (c *Cluster) Leader(ctx context.Context, want int) (int, error) {
	var controls []string
	for _, nd := range c.Nodes {
		if nd.Running() {
			controls = append(controls, nd.Control)
		}
	}
	leader, err := AgreedLeader(ctx, controls, want)
	if err != nil {
		return -1, err
	}
	i := c.Index(leader)
	if i < 0 {
		return -1, fmt.Errorf("leader %q is not a node of this cluster", leader)
	}
	return i, nil
}

// WaitLeader polls Leader until it succeeds, ctx ends or limit passes.
func (c *Cluster) WaitLeader(ctx context.Context, want int, limit time.Duration) (int, error) {
	leader := -1
	err := retry(ctx, limit, func() error {
		var err error
		leader, err = c.Leader(ctx, want)
		return err
	})
	if err != nil {
		return -1, fmt.Errorf("no stable leader: %w", err)
	}
	return leader, nil
}

// WaitReady polls until every node answers /readyz, ctx ends or limit
// passes.
func (c *Cluster) WaitReady(ctx context.Context, limit time.Duration) error {
	return retry(ctx, limit, func() error {
		for _, nd := range c.Nodes {
			if !nd.Ready(ctx) {
				return fmt.Errorf("%s is not ready", nd.ID)
			}
		}
		return nil
	})
}

// StopAll stops every running node in parallel (see Node.Stop) and
// returns the failures joined.
func (c *Cluster) StopAll(limit time.Duration) error {
	errs := make([]error, len(c.Nodes))
	var wg sync.WaitGroup
	for i, nd := range c.Nodes {
		if !nd.Running() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = nd.Stop(limit)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
