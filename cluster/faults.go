package cluster

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"sync"
	"time"
)

// errPartitioned is what a connection to a partitioned peer returns.
var errPartitioned = errors.New("fault injector: peer is partitioned")

// FaultInjector drops this node's raft, internal-RPC and gossip traffic to
// and from chosen peers. Peers are named by node ID or by any of their
// addresses; the node teaches the injector which addresses belong to which
// ID as memberlist reports them. A nil *FaultInjector injects nothing.
//
// A partition is one-sided: to cut a node off completely, partition it on
// both ends (tests do that with a helper).
type FaultInjector struct {
	mu      sync.RWMutex
	blocked map[string]bool
	idOf    map[string]string // address -> node ID
	conns   map[*faultConn]struct{}
}

// NewFaultInjector returns an injector that drops nothing yet.
func NewFaultInjector() *FaultInjector {
	return &FaultInjector{blocked: map[string]bool{}, idOf: map[string]string{}, conns: map[*faultConn]struct{}{}}
}

// Partition drops all traffic to and from peers (node IDs or addresses)
// from now on, including connections already open.
func (f *FaultInjector) Partition(peers ...string) {
	if f == nil {
		return
	}
	f.mu.Lock()
	for _, p := range peers {
		f.blocked[p] = true
	}
	var victims []*faultConn
	for c := range f.conns {
		if f.blockedLocked(c.peers...) {
			victims = append(victims, c)
		}
	}
	f.mu.Unlock()
	// Closing open connections makes blocked reads return at once, as a
	// real network cut would after its timeouts.
	for _, c := range victims {
		c.Close()
	}
}

// Heal removes every partition.
func (f *FaultInjector) Heal() {
	if f == nil {
		return
	}
	f.mu.Lock()
	f.blocked = map[string]bool{}
	f.mu.Unlock()
}

// Partitioned lists the peers currently cut off, sorted.
func (f *FaultInjector) Partitioned() []string {
	if f == nil {
		return nil
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]string, 0, len(f.blocked))
	for p := range f.blocked {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// learn records that addrs belong to node id.
func (f *FaultInjector) learn(id string, addrs ...string) {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range addrs {
		if a != "" {
			f.idOf[a] = id
		}
	}
}

// blocks reports whether traffic with a peer known by any of keys (IDs or
// addresses) must be dropped.
func (f *FaultInjector) blocks(keys ...string) bool {
	if f == nil {
		return false
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.blockedLocked(keys...)
}

func (f *FaultInjector) blockedLocked(keys ...string) bool {
	if len(f.blocked) == 0 {
		return false
	}
	for _, k := range keys {
		if k == "" {
			continue
		}
		if f.blocked[k] {
			return true
		}
		if id, ok := f.idOf[k]; ok && f.blocked[id] {
			return true
		}
	}
	return false
}

// wrap returns conn guarded against partitions of the peer named by keys.
func (f *FaultInjector) wrap(conn net.Conn, keys ...string) net.Conn {
	if f == nil {
		return conn
	}
	c := &faultConn{Conn: conn, f: f, peers: keys}
	f.mu.Lock()
	f.conns[c] = struct{}{}
	f.mu.Unlock()
	return c
}

// faultConn fails every read and write once its peer is partitioned.
type faultConn struct {
	net.Conn
	f         *FaultInjector
	peers     []string
	closeOnce sync.Once
}

func (c *faultConn) Read(b []byte) (int, error) {
	if c.f.blocks(c.peers...) {
		c.Close()
		return 0, errPartitioned
	}
	return c.Conn.Read(b)
}

func (c *faultConn) Write(b []byte) (int, error) {
	if c.f.blocks(c.peers...) {
		c.Close()
		return 0, errPartitioned
	}
	return c.Conn.Write(b)
}

func (c *faultConn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		c.f.mu.Lock()
		delete(c.f.conns, c)
		c.f.mu.Unlock()
		err = c.Conn.Close()
	})
	return err
}

// Every TCP connection between nodes (raft, internal RPC, gossip streams)
// starts with a hello naming the dialing node, so the accepting end knows
// its peer even though the source port is ephemeral.
const helloTimeout = 5 * time.Second

func writeHello(conn net.Conn, nodeID string) error {
	if len(nodeID) > 255 {
		return fmt.Errorf("hello: node ID of %d bytes is too long", len(nodeID))
	}
	b := append([]byte{byte(len(nodeID))}, nodeID...)
	if _, err := conn.Write(b); err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	return nil
}

func readHello(conn net.Conn) (string, error) {
	if err := conn.SetReadDeadline(time.Now().Add(helloTimeout)); err != nil {
		return "", fmt.Errorf("hello: %w", err)
	}
	var n [1]byte
	if _, err := io.ReadFull(conn, n[:]); err != nil {
		return "", fmt.Errorf("hello: %w", err)
	}
	id := make([]byte, n[0])
	if _, err := io.ReadFull(conn, id); err != nil {
		return "", fmt.Errorf("hello: %w", err)
	}
	if err := conn.SetReadDeadline(time.Time{}); err != nil {
		return "", fmt.Errorf("hello: %w", err)
	}
	return string(id), nil
}

// dialPeer dials addr, sends the hello and guards the connection.
func dialPeer(f *FaultInjector, self, addr string, timeout time.Duration) (net.Conn, error) {
	if f.blocks(addr) {
		return nil, fmt.Errorf("dial %s: %w", addr, errPartitioned)
	}
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	if err := conn.SetWriteDeadline(time.Now().Add(timeout)); err == nil {
		err = writeHello(conn, self)
		if err == nil {
			err = conn.SetWriteDeadline(time.Time{})
		}
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("dial %s: %w", addr, err)
		}
	}
	return f.wrap(conn, addr), nil
}

// peerListener accepts connections, reads each one's hello off the accept
// path, drops partitioned peers and hands the rest out through Accept.
type peerListener struct {
	net.Listener
	faults *FaultInjector
	advert net.Addr
	conns  chan net.Conn
	done   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup

	mu      sync.Mutex
	pending map[net.Conn]struct{} // connections whose hello is not read yet
	live    map[net.Conn]struct{} // accepted connections, closed with the listener
}

func newPeerListener(l net.Listener, f *FaultInjector, advert net.Addr) *peerListener {
	p := &peerListener{Listener: l, faults: f, advert: advert, conns: make(chan net.Conn), done: make(chan struct{}), pending: map[net.Conn]struct{}{}, live: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.loop()
	return p
}

func (p *peerListener) loop() {
	defer p.wg.Done()
	for {
		conn, err := p.Listener.Accept()
		if err != nil {
			select {
			case <-p.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off briefly
			// instead of spinning.
			select {
			case <-p.done:
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		p.mu.Lock()
		select {
		case <-p.done:
			p.mu.Unlock()
			conn.Close()
			return
		default:
		}
		p.pending[conn] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.handshake(conn)
	}
}

func (p *peerListener) handshake(conn net.Conn) {
	defer p.wg.Done()
	id, err := readHello(conn)
	p.mu.Lock()
	delete(p.pending, conn)
	p.mu.Unlock()
	if err != nil || p.faults.blocks(id) {
		conn.Close()
		return
	}
	tc := &trackedConn{Conn: p.faults.wrap(conn, id)}
	tc.onClose = func() {
		p.mu.Lock()
		delete(p.live, tc)
		p.mu.Unlock()
	}
	p.mu.Lock()
	p.live[tc] = struct{}{}
	p.mu.Unlock()
	select {
	case p.conns <- tc:
	case <-p.done:
		tc.Close()
	}
}

// trackedConn tells its listener when it closes. The listener closes the
// connections still open when it closes itself: raft's transport leaves
// accepted connections to the peer, and a stopped node must not keep
// goroutines blocked on them.
type trackedConn struct {
	net.Conn
	onClose func()
	once    sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(c.onClose)
	return c.Conn.Close()
}

// Accept returns the next connection whose hello was read.
func (p *peerListener) Accept() (net.Conn, error) {
	select {
	case c := <-p.conns:
		return c, nil
	case <-p.done:
		return nil, fmt.Errorf("accept: %w", net.ErrClosed)
	}
}

// Close stops accepting and waits for pending handshakes.
func (p *peerListener) Close() error {
	var err error
	p.once.Do(func() {
		p.mu.Lock()
		close(p.done)
		var open []net.Conn
		for c := range p.pending {
			open = append(open, c)
		}
		for c := range p.live {
			open = append(open, c)
		}
		p.mu.Unlock()
		for _, c := range open {
			c.Close()
		}
		err = p.Listener.Close()
		p.wg.Wait()
	})
	return err
}

// Addr is the advertised address.
func (p *peerListener) Addr() net.Addr { return p.advert }
