package localcluster

import (
	"fmt"
	"net"
)

// Ports are the six listen addresses of one node.
type Ports struct {
	// Proxy is the HTTP reverse proxy (--http-addr).
	Proxy string
	// Control is the line protocol clients speak (--control-addr).
	Control string
	// Raft is the Raft transport (--raft-addr).
	Raft string
	// Gossip is memberlist, on TCP and UDP (--gossip-addr); it is what
	// other nodes --join.
	Gossip string
	// RPC is the node-to-node forwarding service (--rpc-addr).
	RPC string
	// Admin serves metrics, health and the operator endpoints (--admin-addr).
	Admin string
}

// LayoutPorts lays out node i's ports from base: proxy base+10i, control
// +1, raft +2, gossip +3, rpc +4, admin +5, all on 127.0.0.1.
func LayoutPorts(base, i int) Ports {
	p := func(off int) string { return fmt.Sprintf("127.0.0.1:%d", base+10*i+off) }
	return Ports{Proxy: p(0), Control: p(1), Raft: p(2), Gossip: p(3), RPC: p(4), Admin: p(5)}
}

// All returns the six addresses in layout order.
func (p Ports) All() []string {
	return []string{p.Proxy, p.Control, p.Raft, p.Gossip, p.RPC, p.Admin}
}

// PortsFree reports whether every port of nodes 0..count-1 laid out from
// base can be bound now: TCP for all six, and UDP too for gossip, which
// memberlist also listens on. The check is a snapshot; another program may
// take a port before the nodes bind it.
func PortsFree(base, count int) bool {
	for i := 0; i < count; i++ {
		p := LayoutPorts(base, i)
		for _, addr := range p.All() {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return false
			}
			ln.Close()
		}
		pc, err := net.ListenPacket("udp", p.Gossip)
		if err != nil {
			return false
		}
		pc.Close()
	}
	return true
}
