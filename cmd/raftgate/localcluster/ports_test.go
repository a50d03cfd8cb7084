package localcluster

import (
	"fmt"
	"net"
	"testing"
)

func TestLayoutPorts(t *testing.T) {
	p := LayoutPorts(17000, 2)
	want := Ports{
		Proxy: "127.0.0.1:17020", Control: "127.0.0.1:17021", Raft: "127.0.0.1:17022",
		Gossip: "127.0.0.1:17023", RPC: "127.0.0.1:17024", Admin: "127.0.0.1:17025",
	}
	if p != want {
		t.Errorf("LayoutPorts(17000, 2) = %+v, want %+v", p, want)
	}
	all := p.All()
	if len(all) != 6 || all[0] != want.Proxy || all[3] != want.Gossip || all[5] != want.Admin {
		t.Errorf("All() = %v", all)
	}
}

// freeBase finds a base whose first count slots are free now, trying a
// bounded number of spread-out bases.
func freeBase(t *testing.T, count int) int {
	t.Helper()
	for base := 30000; base < 40000; base += 517 {
		if PortsFree(base, count) {
			return base
		}
	}
	t.Skip("no free port block on this machine")
	return 0
}

func TestPortsFreeSeesTCPAndUDP(t *testing.T) {
	base := freeBase(t, 2)

	// Any of the six TCP ports of any slot being taken makes the block
	// unusable.
	ln, err := net.Listen("tcp", LayoutPorts(base, 1).Admin)
	if err != nil {
		t.Fatalf("take admin port: %v", err)
	}
	if PortsFree(base, 2) {
		t.Error("taken TCP admin port of slot 1 not seen")
	}
	if !PortsFree(base, 1) {
		t.Error("slot 0 is free but reported taken")
	}
	ln.Close()

	// Gossip needs UDP as well: a UDP-only squatter counts.
	pc, err := net.ListenPacket("udp", LayoutPorts(base, 0).Gossip)
	if err != nil {
		t.Fatalf("take gossip UDP port: %v", err)
	}
	if PortsFree(base, 1) {
		t.Error("taken UDP gossip port not seen")
	}
	pc.Close()

	if !PortsFree(base, 2) {
		t.Error("block not free again after release")
	}
}

func TestPortsFreeRejectsBusyPort(t *testing.T) {
	// A port the test certainly holds, laid out as the proxy of slot 0.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	if PortsFree(port, 1) {
		t.Errorf("base %d is held by this test but reported free", port)
	}
	if got := LayoutPorts(port, 0).Proxy; got != fmt.Sprintf("127.0.0.1:%d", port) {
		t.Errorf("proxy of slot 0 is %s", got)
	}
}

func TestFreePortsStayBelowTheEphemeralRange(t *testing.T) {
	base, err := FreeBase(4)
	if err != nil {
		t.Fatal(err)
	}
	if base < minPort || base+10*4 >= 32768 {
		t.Fatalf("FreeBase(4) = %d: node ports must stay below the ephemeral range", base)
	}
	ports, err := FreePorts(20)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p < minPort || p >= 32768 || seen[p] {
			t.Fatalf("FreePorts gave %d (all: %v)", p, ports)
		}
		seen[p] = true
	}
}
