// SPDX-License-Identifier: MIT

package tcpconn

import (
	"cmp"
	"context"
	"crypto/tls"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"time"
)

// Client owns the client side of tcpconn for one part of a program: a
// pool with at most one socket per address, shared by every Connection it
// makes to that address; the Config those sockets use; their Stats; and
// every Connection made through it, which Close ends. Like http.Client,
// there is a DefaultClient, used by NewConnection, NewConnectionWithID,
// Open and Dial, so the original TCP-Conn API works as it always did; make
// your own Client to scope sockets, settings and figures (tests, tenants, a
// component's shutdown).
//
// A Client is safe for concurrent use.
type Client struct {
	cfg *Config // resolved
	// perConfig keys sockets by the *Config given WithConfig as well as by
	// address: DefaultClient's rule, since the package-level functions take
	// a Config per call. A Client made by NewClient has one Config.
	perConfig bool
	pool      clientPool
	scope     scope

	// fleets follows the targets with a scheme that open Connections use
	// (fleet.go), keyed like pool entries.
	fleetMu sync.Mutex
	fleets  map[poolKey]*fleet

	mu     sync.Mutex
	conns  map[*Connection]struct{}
	closed bool
}

// DefaultClient is the Client of the package-level constructors. Its
// sockets are keyed by address and by the *Config pointer given WithConfig
// (nil: defaults). Closing it ends every Connection made through the
// package-level constructors, and makes later ones fail with ErrClosed.
var DefaultClient = newClient(defaultResolved, true)

// NewClient returns a Client whose sockets use cfg (nil: defaults).
func NewClient(cfg *Config) (*Client, error) {
	rc, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	return newClient(rc, false), nil
}

func newClient(cfg *Config, perConfig bool) *Client {
	cl := &Client{cfg: cfg, perConfig: perConfig, conns: make(map[*Connection]struct{})}
	cl.pool.entries = make(map[poolKey]*poolEntry)
	return cl
}

// Open returns a client Connection at once, like NewConnectionWithID but
// with options (WithID, WithIdleTimeout; WithConfig only on DefaultClient).
// It never blocks and never returns nil: the dial starts in the background
// and its errors surface on Send and Receive.
func (cl *Client) Open(address string, opts ...Option) *Connection {
	c, _ := cl.open(address, opts)
	return c
}

// Dial returns a Connection whose socket is connected and has heard the
// server's HELLO, so that a dial, TLS or handshake error is reported at
// once. After that it behaves like Open's (pooled, reconnecting). It is the
// only constructor that waits for the peer.
func (cl *Client) Dial(ctx context.Context, address string, opts ...Option) (*Connection, error) {
	c, err := cl.open(address, opts)
	if err != nil {
		return nil, err
	}
	b, err := c.connect(ctx)
	if err == nil {
		select {
		case <-b.link.helloDone:
		case <-b.link.done:
			err = b.link.err
		case <-ctx.Done():
			err = fmt.Errorf("%w: no HELLO from %s: %w", ErrHandshake, address, ctx.Err())
		}
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// open makes a client Connection and starts its first connect attempt.
func (cl *Client) open(address string, opts []Option) (*Connection, error) {
	var o dialOptions
	for _, opt := range opts {
		opt(&o)
	}
	c := &Connection{id: o.id, catchAll: o.id == "", cfg: defaultResolved}
	rc, key, err := cl.config(o.cfg)
	if err == nil {
		err = checkID(o.id)
	}
	var t Target
	if err == nil {
		t, err = checkTarget(address, rc)
	}
	if err != nil {
		c.closeErr = err
		return c, err
	}
	c.cfg, c.idle = rc, idleOrDefault(o.idle, rc)
	c.client, c.owner, c.addr, c.poolCfg = true, cl, address, key
	c.life, c.stop = context.WithCancel(context.Background())
	c.closed = make(chan struct{})
	cl.mu.Lock()
	if cl.closed {
		cl.mu.Unlock()
		c.closeErr = ErrClosed
		return c, ErrClosed
	}
	cl.conns[c] = struct{}{}
	cl.mu.Unlock()
	if t.Scheme != "" {
		c.fleet = cl.holdFleet(t, key, rc)
	}
	c.mu.Lock()
	c.startAttemptLocked()
	c.mu.Unlock()
	return c, nil
}

// config resolves the Config of a new Connection and its pool key.
func (cl *Client) config(given *Config) (resolved, key *Config, err error) {
	if !cl.perConfig {
		if given != nil {
			return nil, nil, fmt.Errorf("%w: WithConfig on a Client made by NewClient: its Connections use the Client's Config", ErrInvalidConfig)
		}
		return cl.cfg, nil, nil
	}
	resolved, err = given.resolve()
	return resolved, given, err
}

func (cl *Client) forget(c *Connection) {
	cl.mu.Lock()
	delete(cl.conns, c)
	cl.mu.Unlock()
}

// Stats returns the Client's counters: its open links and the logical
// connections bound to them, and the traffic of every link it has had.
func (cl *Client) Stats() Stats { return cl.scope.stats() }

// Links describes the Client's open links.
func (cl *Client) Links() []LinkStats { return cl.scope.linkStats() }

// Close ends every Connection made through cl (as Connection.Close does:
// promptly, the peer told) and makes later ones fail with ErrClosed. The
// sockets close in the background once their last Connection is gone.
func (cl *Client) Close() error {
	cl.mu.Lock()
	cl.closed = true
	conns := slices.Collect(maps.Keys(cl.conns))
	cl.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	return nil
}

// The pool of a Client: one entry per address (and *Config on
// DefaultClient), holding at most one live link shared by every client
// Connection to it, reference counted by the Connections currently bound.
// Dials are de-duplicated and spaced by an exponential backoff with jitter
// after failures.
type clientPool struct {
	mu      sync.Mutex
	entries map[poolKey]*poolEntry
}

type poolKey struct {
	address string
	cfg     *Config // DefaultClient: the caller's pointer (nil for defaults)
}

type poolEntry struct {
	key    poolKey
	cfg    *Config // resolved
	pool   *clientPool
	client *Client

	mu       sync.Mutex
	link     *link
	refs     int
	dialing  chan struct{} // closed when the dial in progress ends
	failures int
	nextDial time.Time
	lastErr  error
}

// hold returns the entry for (address, cfg) and counts the caller as one of
// its users, atomically with respect to forgetIfUnused.
func (cl *Client) hold(address string, cfg, resolved *Config) *poolEntry {
	p := &cl.pool
	k := poolKey{address, cfg}
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.entries[k]
	if e == nil {
		e = &poolEntry{key: k, cfg: resolved, pool: p, client: cl}
		p.entries[k] = e
	}
	e.mu.Lock()
	e.refs++
	e.mu.Unlock()
	return e
}

// acquire returns the entry's live link, dialling one if needed. The
// caller holds the entry (hold). With failFast (a fleet's endpoint, which
// has others to go to) it reports a failure at once, a shared dial's or
// the last one's while the backoff runs, instead of waiting out the
// backoff and dialling again.
func (e *poolEntry) acquire(ctx context.Context, failFast bool) (*link, error) {
	e.mu.Lock()
	for {
		if l := e.link; l != nil && !l.failed() && !l.goingAway.Load() {
			e.mu.Unlock()
			return l, nil
		}
		if e.dialing != nil {
			ch, failures := e.dialing, e.failures
			e.mu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			e.mu.Lock()
			if failFast && e.failures > failures {
				err := e.lastErr
				e.mu.Unlock()
				return nil, cmp.Or(err, ErrLinkLost)
			}
			continue
		}
		if wait := time.Until(e.nextDial); wait > 0 {
			if failFast {
				err := e.lastErr
				e.mu.Unlock()
				return nil, cmp.Or(err, ErrLinkLost)
			}
			e.mu.Unlock()
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil, fmt.Errorf("%w (last dial error: %v)", ctx.Err(), e.lastDialError())
			}
			e.mu.Lock()
			continue
		}
		e.dialing = make(chan struct{})
		e.mu.Unlock()

		l, err := dialLink(ctx, e)

		e.mu.Lock()
		close(e.dialing)
		e.dialing = nil
		if err != nil && ctx.Err() != nil {
			e.mu.Unlock() // canceled by our caller (Close): not the server's fault
			return nil, err
		}
		if err != nil {
			e.failures++
			e.lastErr = err
			e.nextDial = time.Now().Add(backoff(e.cfg, e.failures))
			e.mu.Unlock()
			return nil, err
		}
		e.failures, e.lastErr = 0, nil
		// A link the peer sent GOAWAY on is left to its remaining users;
		// the last of them closes it (release).
		e.link = l
		e.mu.Unlock()
		e.client.linkEvent(l, LinkEvent{Kind: LinkUp}, 0)
		e.mu.Lock()
	}
}

func (e *poolEntry) lastDialError() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lastErr
}

// backoff is min * 2^(failures-1), capped, with ±50% jitter so that many
// clients of a restarted server do not redial in lockstep.
func backoff(cfg *Config, failures int) time.Duration {
	d := cfg.ReconnectBackoffMin << min(failures-1, 30)
	if d <= 0 || d > cfg.ReconnectBackoffMax {
		d = cfg.ReconnectBackoffMax
	}
	return d/2 + rand.N(d)
}

// release drops one user (bound to l, or nil); the last user closes the
// entry's link and lets the pool forget the entry.
func (e *poolEntry) release(l *link) {
	e.mu.Lock()
	e.refs--
	last := e.refs == 0 && e.link != nil
	cur := e.link
	if last {
		e.link = nil
	}
	e.mu.Unlock()
	if last {
		cur.close()
	}
	e.forgetIfUnused()
	if l != nil && cur != l && !l.failed() && l.routes.n.Load() == 0 {
		l.close() // an older link the peer asked us to leave (GOAWAY)
	}
}

// dialLink dials and wraps TLS if configured. It does not wait for the
// peer's HELLO: senders may use InitialWindow at once (0-RTT).
func dialLink(ctx context.Context, e *poolEntry) (*link, error) {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.DialTimeout)
	defer cancel()
	conn, err := e.dial(ctx)
	if err != nil {
		return nil, err
	}
	cl := e.client
	return newLink(conn, e.cfg, true, linkHooks{
		scope:    &cl.scope,
		dialLane: e.dial,
		endpoint: e.key.address,
		onClose: func(l *link) {
			go cl.linkEvent(l, LinkEvent{Kind: LinkLost, Err: l.err}, 0)
		},
		onGoAway: func(l *link, code goAwayCode) {
			cl.linkEvent(l, LinkEvent{Kind: LinkGoAway, Draining: code.draining()}, code)
		},
	}), nil
}

// dial opens a socket to the entry's address, TLS if configured; the
// TLS handshake runs on its first read and write.
func (e *poolEntry) dial(ctx context.Context) (net.Conn, error) {
	cfg := e.cfg
	var conn net.Conn
	var err error
	if cfg.Dialer != nil {
		conn, err = cfg.Dialer(ctx, "tcp", e.key.address)
	} else {
		var d net.Dialer
		conn, err = d.DialContext(ctx, "tcp", e.key.address)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: dial %s: %w", ErrLinkLost, e.key.address, err)
	}
	if cfg.TLSConfig != nil {
		tc := cfg.TLSConfig
		if tc.ServerName == "" {
			tc = tc.Clone()
			if host, _, err := net.SplitHostPort(e.key.address); err == nil {
				tc.ServerName = host
			}
		}
		// The TLS handshake runs on the link's first read and write, in
		// its own goroutines: a Send must not wait for a server that has
		// not accepted the socket yet. Its failure fails the link with
		// ErrHandshake.
		conn = tls.Client(conn, tc)
	}
	return conn, nil
}

// forgetIfUnused drops the entry from its pool once nothing uses it, so a
// process that talks to many addresses over time does not keep them all.
// Backoff state goes with it: an unused entry has nobody to protect.
func (e *poolEntry) forgetIfUnused() {
	e.pool.mu.Lock()
	defer e.pool.mu.Unlock()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.refs == 0 && e.link == nil && e.dialing == nil && e.pool.entries[e.key] == e {
		delete(e.pool.entries, e.key)
	}
}
