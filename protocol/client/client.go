package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Defaults applied by New and Dial to zero Config fields.
const (
	DefaultDialTimeout    = 5 * time.Second
	DefaultCommandTimeout = 15 * time.Second
	DefaultMinBackoff     = 50 * time.Millisecond
	DefaultMaxBackoff     = 5 * time.Second
)

// Config describes the nodes to talk to and, for New, the session to
// register.
type Config struct {
	// Addrs are control addresses (host:port) of cluster nodes. The client
	// connects to the first reachable one and fails over to the others; it
	// also learns more addresses from CLUSTER_STATUS.
	Addrs []string
	// Service is the service name sent in REGISTER ([A-Za-z0-9._-]{1,64}).
	Service string
	// Instance names this process within the service; empty lets the
	// server use the client's IP. Registering again with the same service
	// and instance replaces the old session.
	Instance string
	// MaintenancePort is sent in REGISTER (0-65535).
	MaintenancePort int
	// Metadata is an optional JSON object (at most 4 KiB) sent in REGISTER.
	Metadata json.RawMessage

	// DialTimeout bounds one TCP connect (default DefaultDialTimeout).
	DialTimeout time.Duration
	// CommandTimeout bounds a command whose context has no deadline
	// (default DefaultCommandTimeout; negative means no bound). It does
	// not bound the wait for MAINT_OK, which only the context ends.
	CommandTimeout time.Duration
	// MinBackoff and MaxBackoff bound the jittered, doubling pause between
	// two rounds over all addresses while reconnecting.
	MinBackoff, MaxBackoff time.Duration
	// Compressed makes RouteList and StatsGet ask for gzip+base64 payloads.
	// Responses are decoded either way.
	Compressed bool
	// DisableDiscovery stops the client from sending CLUSTER_STATUS after
	// each connect to learn the other nodes' control addresses.
	DisableDiscovery bool
	// Logger receives one structured line per connection event
	// (default slog.Default()).
	Logger *slog.Logger
}

// Event is an `EVENT|type|json` line for a subscribed event type.
type Event struct {
	Type string
	Data json.RawMessage
}

// MaintNotice is an asynchronous maintenance line: `MAINT_OK|target`
// (Err nil) or the maintenance timeout (Err matches ErrMaintenanceTimeout,
// Target empty because the line does not name it).
type MaintNotice struct {
	Target string
	Err    error
}

// ReregisterFunc is called after failover found the session expired and
// registered a new one. The new session has no routes or settings: this is
// where an application stages and applies them again. ctx ends when the
// client is closed.
type ReregisterFunc func(ctx context.Context, oldSessionID, newSessionID string)

// Client is a connection to a raftgate cluster, with or without a session.
// It is safe for concurrent use; commands from many goroutines are
// pipelined over one connection and each gets its own response.
type Client struct {
	cfg      Config
	log      *slog.Logger
	register bool // made by New: has (or re-creates) a session

	ctx    context.Context // ends on Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // internal goroutines: readers, reconnect, discovery
	hooks  sync.WaitGroup // user callbacks; Close does not wait for them
	events chan func()    // handler invocations, run in order by dispatchEvents

	mu           sync.Mutex
	addrs        []string
	next         int // index in addrs to try first on the next connect
	cur          *conn
	live         map[*conn]struct{} // every open connection, for Close
	session      string
	closed       bool
	noFailover   bool // set by Shutdown: the coming close is expected
	reconnecting bool
	ready        chan struct{} // closed when the running reconnect ends
	lastErr      error
	lastAddr     string
	maint        []*maintWait
	onEvent      []func(Event)
	onRereg      []ReregisterFunc
	onMaint      []func(MaintNotice)
	onShutdown   []func(addr string)

	// maintLimit bounds the wait for MAINT_OK after the ACK
	// (abandonedMaintTTL; tests shorten it).
	maintLimit time.Duration
}

// New connects to one of cfg.Addrs, registers the session and returns the
// client. It tries every address (with backoff) until ctx ends; an ERROR
// answer to REGISTER (for example "invalid service name") is returned at
// once as a *ServerError.
func New(ctx context.Context, cfg Config) (*Client, error) {
	if err := checkFields("service", cfg.Service, "instance", cfg.Instance); err != nil {
		return nil, err
	}
	if cfg.MaintenancePort < 0 || cfg.MaintenancePort > 65535 {
		return nil, &FieldError{Field: "maintenance_port", Value: strconv.Itoa(cfg.MaintenancePort), Reason: "must be 0-65535"}
	}
	if _, err := encodeJSONField("metadata", cfg.Metadata); err != nil {
		return nil, err
	}
	return open(ctx, cfg, true)
}

// Dial connects to one of addrs without registering a session, for
// session-less commands such as Ping and ClusterStatus. Session commands on
// it return ErrNoSession.
func Dial(ctx context.Context, addrs ...string) (*Client, error) {
	return DialConfig(ctx, Config{Addrs: addrs})
}

// DialConfig is Dial with the timeouts, backoff and logger of cfg; the
// session fields of cfg are ignored.
func DialConfig(ctx context.Context, cfg Config) (*Client, error) {
	return open(ctx, cfg, false)
}

// open makes a client and connects it (registering when asked).
func open(ctx context.Context, cfg Config, register bool) (*Client, error) {
	c, err := newClient(cfg, register)
	if err != nil {
		return nil, err
	}
	if err := c.connectFirst(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func newClient(cfg Config, register bool) (*Client, error) {
	if len(cfg.Addrs) == 0 {
		return nil, errors.New("raftgate client: no node addresses")
	}
	for _, a := range cfg.Addrs {
		if a == "" {
			return nil, errors.New("raftgate client: empty node address")
		}
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.CommandTimeout == 0 {
		cfg.CommandTimeout = DefaultCommandTimeout
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(DefaultMaxBackoff, cfg.MinBackoff)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		cfg:      cfg,
		log:      cfg.Logger,
		register: register,
		ctx:      ctx,
		cancel:   cancel,
		events:   make(chan func(), eventQueueLen),
		addrs:    append([]string(nil), cfg.Addrs...),
		live:     make(map[*conn]struct{}),

		maintLimit: abandonedMaintTTL,
	}
	c.hooks.Add(1)
	go func() {
		defer c.hooks.Done()
		c.dispatchEvents()
	}()
	return c, nil
}

// SessionID returns the current session ID ("" for a Dial client). It
// changes when failover has to register again.
func (c *Client) SessionID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.session
}

// Addrs returns the node addresses the client knows, given and learned.
func (c *Client) Addrs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.addrs...)
}

// ConnectedTo returns the address of the node the client is connected to,
// or "" while it is reconnecting.
func (c *Client) ConnectedTo() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == nil {
		return ""
	}
	return c.cur.addr
}

// OnEvent registers a handler for EVENT lines. Handlers run one at a time,
// in arrival order, on a goroutine of their own, so they may call client
// methods (Close included). If handlers fall more than eventQueueLen
// invocations behind, further ones are dropped and logged.
func (c *Client) OnEvent(fn func(Event)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onEvent = append(c.onEvent, fn)
}

// OnReregister registers a hook run, on its own goroutine, after failover
// replaced an expired session with a new one.
func (c *Client) OnReregister(fn ReregisterFunc) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onRereg = append(c.onRereg, fn)
}

// OnMaintenance registers a handler for every asynchronous maintenance
// line, including those whose MaintEnter/MaintExit caller gave up. It runs
// on the event goroutine, like OnEvent handlers.
func (c *Client) OnMaintenance(fn func(MaintNotice)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onMaint = append(c.onMaint, fn)
}

// OnShutdown registers a handler called with the node's address when a
// node announces SHUTDOWN. The client fails over by itself; this is for
// logging and metrics. It runs on the event goroutine.
func (c *Client) OnShutdown(fn func(addr string)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onShutdown = append(c.onShutdown, fn)
}

// Close closes the connection and stops failover. Commands in flight fail
// with an error wrapping ErrConnectionLost; later calls return ErrClosed.
// The session is not ended: it stays alive for the server's grace period
// (use Shutdown to end it). Close waits for the client's own goroutines but
// not for handlers and hooks still running, which see ErrClosed from any
// further call.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.cur = nil
	live := make([]*conn, 0, len(c.live))
	for cn := range c.live {
		live = append(live, cn)
	}
	maint := c.maint
	c.maint = nil
	c.mu.Unlock()

	c.cancel()
	for _, mw := range maint {
		mw.finish(ErrClosed)
	}
	// Including connections retiring after SHUTDOWN, whose node may take
	// its time to close them.
	for _, cn := range live {
		cn.fail(ErrClosed)
	}
	c.wg.Wait()
	return nil
}

// commandCtx applies CommandTimeout to a context without a deadline.
func (c *Client) commandCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok || c.cfg.CommandTimeout < 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, c.cfg.CommandTimeout)
}

// getConn returns the live connection and the session ID to use with it,
// waiting for a reconnect when there is none.
func (c *Client) getConn(ctx context.Context) (*conn, string, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, "", ErrClosed
		}
		if c.cur != nil && !c.cur.dead() {
			cn, s := c.cur, c.session
			c.mu.Unlock()
			return cn, s, nil
		}
		c.startReconnectLocked()
		if !c.reconnecting {
			// Only after Shutdown: the session is ending, so there is
			// nothing to fail over to.
			c.mu.Unlock()
			return nil, "", ErrClosed
		}
		ready := c.ready
		c.mu.Unlock()
		select {
		case <-ready:
		case <-c.ctx.Done():
			return nil, "", ErrClosed
		case <-ctx.Done():
			c.mu.Lock()
			lastErr := c.lastErr
			c.mu.Unlock()
			if lastErr != nil {
				return nil, "", fmt.Errorf("%w (last error: %v): %w", ErrUnavailable, lastErr, ctx.Err())
			}
			return nil, "", fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
		}
	}
}

// call sends `word|S|fields...` (or `word|fields...` without a session) and
// returns the response split into code and rest. A response code ERROR
// becomes a *ServerError. onResponse, if set, runs on the reader goroutine
// as soon as the response line arrives, with the session the command was
// sent for.
func (c *Client) call(ctx context.Context, word string, withSession bool, onResponse func(session, line string), fields ...string) (code, rest string, cn *conn, err error) {
	if err := ctx.Err(); err != nil {
		return "", "", nil, fmt.Errorf("%s: not sent: %w", word, err)
	}
	ctx, cancel := c.commandCtx(ctx)
	defer cancel()
	for {
		cn, session, err := c.getConn(ctx)
		if err != nil {
			return "", "", nil, fmt.Errorf("%s: %w", word, err)
		}
		if withSession && session == "" {
			return "", "", nil, fmt.Errorf("%s: %w", word, ErrNoSession)
		}
		line := buildLine(word, withSession, session, fields)
		var hook func(string)
		if onResponse != nil {
			hook = func(line string) { onResponse(session, line) }
		}
		w, err := cn.send(ctx, line, hook)
		if errors.Is(err, errNotSent) {
			// The caller ran out of time before the line went out.
			return "", "", nil, fmt.Errorf("%s: %w", word, err)
		}
		if err != nil {
			// Not written (the connection died or is retiring): try the
			// next one, which getConn waits for.
			continue
		}
		resp, err := cn.wait(ctx, w)
		if err != nil {
			return "", "", cn, fmt.Errorf("%s: %w", word, err)
		}
		code, rest, _ = strings.Cut(resp, "|")
		if code == "ERROR" {
			return code, rest, cn, &ServerError{Command: word, Msg: rest}
		}
		return code, rest, cn, nil
	}
}

func buildLine(word string, withSession bool, session string, fields []string) string {
	var b strings.Builder
	b.WriteString(word)
	if withSession {
		b.WriteByte('|')
		b.WriteString(session)
	}
	for _, f := range fields {
		b.WriteByte('|')
		b.WriteString(f)
	}
	return b.String()
}

// expect runs a session command whose success is exactly `want` or
// `want|payload`; it returns the payload.
func (c *Client) expect(ctx context.Context, want, word string, fields ...string) (string, error) {
	return c.expectOpt(ctx, true, want, word, fields...)
}

func (c *Client) expectOpt(ctx context.Context, withSession bool, want, word string, fields ...string) (string, error) {
	code, rest, _, err := c.call(ctx, word, withSession, nil, fields...)
	if err != nil {
		return "", err
	}
	if code != want {
		return "", unexpected(word, code, rest)
	}
	return rest, nil
}

func unexpected(word, code, rest string) error {
	return fmt.Errorf("%s: %w: unexpected response %q", word, ErrProtocol, truncate(code+"|"+rest, 200))
}

// decodeJSON unmarshals a response payload, naming the command on error.
func decodeJSON(word, payload string, v any) error {
	if err := json.Unmarshal([]byte(payload), v); err != nil {
		return fmt.Errorf("%s: %w: decode response: %w", word, ErrProtocol, err)
	}
	return nil
}

// encodeJSONField prepares a JSON value to travel as a field: compacted (no
// raw newlines) and with every '|' written as \u007c. '|' can only occur
// inside JSON strings, where the escape means the same character, so the
// line stays splittable on '|' even by a server that splits every field.
func encodeJSONField(name string, raw []byte) (string, error) {
	if len(raw) == 0 {
		return "", nil
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil {
		return "", &FieldError{Field: name, Value: truncate(string(raw), 64), Reason: "not valid JSON: " + err.Error()}
	}
	var buf strings.Builder
	for _, ch := range compact.Bytes() {
		if ch == '|' {
			buf.WriteString(`\u007c`)
			continue
		}
		buf.WriteByte(ch)
	}
	return buf.String(), nil
}
