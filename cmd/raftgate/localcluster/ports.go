package localcluster

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"time"
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

// Node ports are drawn from [minPort, maxPort): below Linux's default
// ephemeral range (32768-60999). Outgoing connections take ephemeral ports,
// so a port from that range can be taken by some client while its node is
// down for a restart, and the node then fails to bind (seen in a chaos run).
const (
	minPort = 10000
	maxPort = 32000
)

// FreeBase picks a free port layout for slots nodes (see LayoutPorts)
// below the ephemeral range.
func FreeBase(slots int) (int, error) {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(os.Getpid())))
	span := (maxPort - minPort - 10*slots) / 100
	for range 100 {
		base := minPort + 100*rng.IntN(span)
		if PortsFree(base, slots) {
			return base, nil
		}
	}
	return 0, errors.New("no free block of loopback ports below 32000; pass a base port")
}

// FreePorts returns n distinct loopback ports, free for TCP and UDP, below
// the ephemeral range. They are not reserved: another program could take
// one before the caller binds it.
func FreePorts(n int) ([]int, error) {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(os.Getpid())+1))
	seen := map[int]bool{}
	var out []int
	for tries := 0; len(out) < n && tries < 100*n+100; tries++ {
		p := minPort + rng.IntN(maxPort-minPort)
		if seen[p] {
			continue
		}
		seen[p] = true
		if portFree(p) {
			out = append(out, p)
		}
	}
	if len(out) < n {
		return nil, errors.New("not enough free loopback ports below 32000")
	}
	return out, nil
}

func portFree(p int) bool {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	ln.Close()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	pc.Close()
	return true
}
