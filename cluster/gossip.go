package cluster

import (
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// gossipTransport wraps memberlist's UDP+TCP transport so the fault
// injector can drop gossip to and from partitioned peers. Streams carry
// the same hello as every other connection between nodes.
type gossipTransport struct {
	inner  *memberlist.NetTransport
	self   string
	faults *FaultInjector

	packets chan *memberlist.Packet
	streams chan net.Conn
	done    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
}

func newGossipTransport(inner *memberlist.NetTransport, self string, f *FaultInjector) *gossipTransport {
	t := &gossipTransport{
		inner: inner, self: self, faults: f,
		packets: make(chan *memberlist.Packet), streams: make(chan net.Conn), done: make(chan struct{}),
	}
	t.wg.Add(2)
	go t.forwardPackets()
	go t.forwardStreams()
	return t
}

func (t *gossipTransport) forwardPackets() {
	defer t.wg.Done()
	for {
		select {
		case p := <-t.inner.PacketCh():
			if p.From != nil && t.faults.blocks(p.From.String()) {
				continue
			}
			select {
			case t.packets <- p:
			case <-t.done:
				return
			}
		case <-t.done:
			return
		}
	}
}

func (t *gossipTransport) forwardStreams() {
	defer t.wg.Done()
	for {
		select {
		case conn := <-t.inner.StreamCh():
			t.wg.Add(1)
			go func() {
				defer t.wg.Done()
				stop := make(chan struct{})
				defer close(stop)
				go func() {
					// Shutdown must not wait helloTimeout for a silent peer.
					select {
					case <-t.done:
						conn.Close()
					case <-stop:
					}
				}()
				id, err := readHello(conn)
				if err != nil || t.faults.blocks(id) {
					conn.Close()
					return
				}
				select {
				case t.streams <- t.faults.wrap(conn, id):
				case <-t.done:
					conn.Close()
				}
			}()
		case <-t.done:
			return
		}
	}
}

// FinalAdvertiseAddr implements memberlist.Transport.
func (t *gossipTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return t.inner.FinalAdvertiseAddr(ip, port)
}

// WriteTo implements memberlist.Transport; packets to a partitioned peer
// vanish as they would on a cut network.
func (t *gossipTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.faults.blocks(addr) {
		return time.Now(), nil
	}
	return t.inner.WriteTo(b, addr)
}

// PacketCh implements memberlist.Transport.
func (t *gossipTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }

// DialTimeout implements memberlist.Transport.
func (t *gossipTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return dialPeer(t.faults, t.self, addr, timeout)
}

// StreamCh implements memberlist.Transport.
func (t *gossipTransport) StreamCh() <-chan net.Conn { return t.streams }

// Shutdown implements memberlist.Transport.
func (t *gossipTransport) Shutdown() error {
	var err error
	t.once.Do(func() {
		close(t.done)
		t.wg.Wait()
		// The inner transport's listeners block on unbuffered channels
		// until someone reads; drain them while it shuts down.
		stop := make(chan struct{})
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			for {
				select {
				case <-t.inner.PacketCh():
				case c := <-t.inner.StreamCh():
					c.Close()
				case <-stop:
					return
				}
			}
		}()
		err = t.inner.Shutdown()
		close(stop)
		<-drained
	})
	return err
}

// splitBind parses a bind address; an empty host means all interfaces.
func splitBind(addr string) (string, int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("bind address %q: %w", addr, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return "", 0, fmt.Errorf("bind address %q: bad port", addr)
	}
	return host, p, nil
}

// advertiseHost picks the host other nodes use to reach a listener bound
// to bindHost.
func advertiseHost(bindHost, override string) string {
	if override != "" {
		return override
	}
	ip := net.ParseIP(bindHost)
	if bindHost != "" && (ip == nil || !ip.IsUnspecified()) {
		return bindHost
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsPrivate() {
				return n.IP.String()
			}
		}
	}
	return "127.0.0.1"
}

// listen binds a TCP listener and returns it with its advertised address.
func listen(bind, override string) (net.Listener, string, error) {
	host, _, err := splitBind(bind)
	if err != nil {
		return nil, "", err
	}
	l, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, "", fmt.Errorf("listen on %s: %w", bind, err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	return l, net.JoinHostPort(advertiseHost(host, override), strconv.Itoa(port)), nil
}
