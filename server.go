// SPDX-License-Identifier: MIT

package tcpconn

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The server side: wrapping accepted sockets (the original TCP-Conn API)
// and Listener.

// wrapRegistry maps each wrapped socket to its one link, so that several
// Wrap* calls on one accepted net.Conn share a single reader, as a client's
// Connections to one address do: two readers on one socket would deadlock
// or take each other's frames. An entry lives while a Connection
// made by Wrap* on it is open, and is removed when the socket closes.
var wrapRegistry = struct {
	mu sync.Mutex
	m  map[net.Conn]*wrapEntry
}{m: make(map[net.Conn]*wrapEntry)}

type wrapEntry struct {
	conn net.Conn
	link *link
	refs int
}

// WrapConnection returns the catch-all logical connection (empty ID) of an
// accepted socket: it receives every message no WrapConnectionWithID on the
// same socket claims, and Send answers the logical connection whose message
// Receive returned last. It never returns nil; errors surface on
// Send/Receive. The socket is closed when the last Connection wrapping it is
// closed or idles out, or when the peer goes away.
func WrapConnection(conn net.Conn, idleTimeout time.Duration) *Connection {
	return WrapConnectionWithID(conn, "", idleTimeout)
}

// WrapConnectionWithID returns the logical connection id of an accepted
// socket. Several calls with different IDs on the same conn share one reader;
// messages that arrived for id before this call are kept and delivered.
func WrapConnectionWithID(conn net.Conn, id string, idleTimeout time.Duration) *Connection {
	c, _ := Wrap(conn, WithID(id), WithIdleTimeout(idleTimeout))
	return c
}

// Wrap is WrapConnectionWithID with options and an immediate error. The
// first Wrap of a socket fixes its Config (WithConfig).
func Wrap(conn net.Conn, opts ...Option) (*Connection, error) {
	var o dialOptions
	for _, opt := range opts {
		opt(&o)
	}
	rc, err := o.cfg.resolve()
	if err == nil {
		err = checkID(o.id)
	}
	c := &Connection{id: o.id, catchAll: o.id == "", cfg: defaultResolved}
	if err != nil {
		c.closeErr = err
		return c, err
	}
	c.cfg, c.idle = rc, idleOrDefault(o.idle, rc)

	e := acquireWrapped(conn, rc)
	b, err := c.attach(e.link)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		releaseWrapped(e)
		c.closeErr = err
		return c, err
	}
	c.wrapped, c.held = e, true
	c.bindLocked(b)
	return c, nil
}

func acquireWrapped(conn net.Conn, cfg *Config) *wrapEntry {
	wrapRegistry.mu.Lock()
	defer wrapRegistry.mu.Unlock()
	e := wrapRegistry.m[conn]
	if e == nil {
		e = &wrapEntry{conn: conn}
		e.link = newLink(conn, cfg, false, linkHooks{onClose: func(l *link) { forgetWrapped(e, l) }, scope: &wrapScope})
		wrapRegistry.m[conn] = e
	}
	e.refs++
	return e
}

// forgetWrapped ends the registration of a socket whose link ended. A
// socket that became another link's bulk lane stays registered until the
// lane closes it (forgetLaneSocket): a later Wrap* of it must not start a
// link there, whose HELLO would reach the peer's lane reader; it gets the
// ended link's error, ErrBulkLane.
func forgetWrapped(e *wrapEntry, l *link) {
	if l.handedOff.Load() { // l: e.link may not be set yet when l fails at once
		return
	}
	wrapRegistry.mu.Lock()
	if wrapRegistry.m[e.conn] == e {
		delete(wrapRegistry.m, e.conn)
	}
	wrapRegistry.mu.Unlock()
}

// forgetLaneSocket ends the registration of a wrapped socket that became
// a bulk lane, once the lane closed it.
func forgetLaneSocket(conn net.Conn) {
	wrapRegistry.mu.Lock()
	if e := wrapRegistry.m[conn]; e != nil && e.link.handedOff.Load() {
		delete(wrapRegistry.m, conn)
	}
	wrapRegistry.mu.Unlock()
}

// releaseWrapped drops one Connection's hold; the last one closes the socket.
func releaseWrapped(e *wrapEntry) {
	wrapRegistry.mu.Lock()
	e.refs--
	last := e.refs == 0
	if last && wrapRegistry.m[e.conn] == e && !e.link.handedOff.Load() {
		delete(wrapRegistry.m, e.conn)
	}
	wrapRegistry.mu.Unlock()
	if last {
		e.link.close()
	}
}

// Listener accepts sockets and hands out every logical connection its
// clients open, whatever its ID, through Accept. Each accepted socket gets
// one reader; new IDs beyond the accept backlog are refused (the client sees
// ErrRefused), never blocking the socket.
type Listener struct {
	ln      net.Listener
	cfg     *Config
	backlog chan *stream

	mu       sync.Mutex
	links    map[*link]uint32 // each accepted link; during Shutdown, its drain PING (goAwayDraining)
	closed   bool
	draining atomic.Bool

	done      chan struct{}
	closeOnce sync.Once
	loopDone  chan struct{}
	err       error // why the accept loop stopped, if not Close

	scope scope // Stats of its sockets
}

// Listen listens on network/address (as net.Listen) and serves tcpconn on
// every accepted socket. cfg may be nil for defaults.
func Listen(network, address string, cfg *Config) (*Listener, error) {
	rc, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	nl, err := net.Listen(network, address)
	if err != nil {
		return nil, err
	}
	return newListener(nl, rc), nil
}

// NewListener serves tcpconn on the sockets ln accepts (for example a
// tls.Listener). The Listener owns ln and closes it.
func NewListener(ln net.Listener, cfg *Config) (*Listener, error) {
	rc, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	return newListener(ln, rc), nil
}

func newListener(nl net.Listener, cfg *Config) *Listener {
	ln := &Listener{
		ln:       nl,
		cfg:      cfg,
		backlog:  make(chan *stream, cfg.AcceptBacklog),
		links:    make(map[*link]uint32),
		done:     make(chan struct{}),
		loopDone: make(chan struct{}),
	}
	go ln.acceptLoop()
	return ln
}

// Stats returns the Listener's counters: its open sockets, the logical
// connections bound to them, and the traffic of every socket it accepted.
func (ln *Listener) Stats() Stats { return ln.scope.stats() }

// Links describes the Listener's open sockets.
func (ln *Listener) Links() []LinkStats { return ln.scope.linkStats() }

// Addr returns the listening address.
func (ln *Listener) Addr() net.Addr { return ln.ln.Addr() }

func (ln *Listener) acceptLoop() {
	defer close(ln.loopDone)
	var delay time.Duration
	for {
		conn, err := ln.ln.Accept()
		if err != nil {
			select {
			case <-ln.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) {
				// Out of descriptors or similar: back off instead of spinning.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				t := time.NewTimer(delay)
				select {
				case <-t.C:
				case <-ln.done:
					t.Stop()
					return
				}
				continue
			}
			if ln.draining.Load() {
				return // Shutdown closed ln.ln; it closes the rest once idle
			}
			ln.mu.Lock()
			ln.err = err
			ln.mu.Unlock()
			go ln.Close() // not inline: Close waits for this loop to end
			return
		}
		delay = 0
		ln.mu.Lock()
		if ln.closed {
			ln.mu.Unlock()
			conn.Close()
			return
		}
		l := newLink(conn, ln.cfg, false, linkHooks{accept: ln.offer, onClose: ln.forget, scope: &ln.scope})
		ln.links[l] = 0
		if ln.draining.Load() {
			// Accepted while Shutdown ran: its GOAWAY loop (under ln.mu)
			// may have passed already.
			ln.links[l] = l.goAwayDraining(goAwayShutdown, "shutdown")
		}
		ln.mu.Unlock()
		if ln.cfg.MaxLinkAge > 0 {
			ln.ageLink(l)
		}
	}
}

// offer queues a record for Accept. A shutting-down Listener still takes
// one: its client opened it before it read the GOAWAY, and moves it away
// at a quiet point once it has (drain.go); refusing it would lose the
// messages sent with it.
func (ln *Listener) offer(s *stream) bool {
	select {
	case ln.backlog <- s:
		return true
	default:
		return false
	}
}

func (ln *Listener) forget(l *link) {
	ln.mu.Lock()
	delete(ln.links, l)
	ln.mu.Unlock()
}

// Accept waits for the next logical connection opened by a client.
func (ln *Listener) Accept() (*Connection, error) {
	return ln.AcceptContext(context.Background())
}

// AcceptContext is Accept with cancellation.
func (ln *Listener) AcceptContext(ctx context.Context) (*Connection, error) {
	select {
	case s := <-ln.backlog:
		c := &Connection{id: s.id, cfg: ln.cfg, idle: ln.cfg.IdleTimeout}
		s.mu.Lock()
		s.owner = c
		s.mu.Unlock()
		c.mu.Lock()
		c.bindLocked(&binding{link: s.link, st: s})
		c.mu.Unlock()
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-ln.done:
		ln.mu.Lock()
		defer ln.mu.Unlock()
		if ln.err != nil {
			return nil, fmt.Errorf("%w: %w", ErrClosed, ln.err)
		}
		return nil, ErrClosed
	}
}

// Close stops accepting and closes every socket the Listener accepted;
// blocked calls on their Connections return once each client has answered
// the close (at most a second later on TCP, see PROTOCOL.md, GOAWAY).
func (ln *Listener) Close() error {
	var err error
	ln.closeOnce.Do(func() {
		ln.mu.Lock()
		ln.closed = true
		links := slices.Collect(maps.Keys(ln.links))
		ln.mu.Unlock()
		close(ln.done)
		err = ln.ln.Close()
		<-ln.loopDone
		for _, l := range links {
			l.close()
		}
		for {
			select {
			case s := <-ln.backlog:
				s.drain()
				continue
			default:
			}
			break
		}
	})
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// Shutdown stops accepting sockets and logical connections, tells clients
// (GOAWAY) to open new ones elsewhere, waits until every accepted logical
// connection is closed or ctx ends, then closes. It returns ctx's error if
// it had to cut connections short.
func (ln *Listener) Shutdown(ctx context.Context) error {
	ln.draining.Store(true)
	ln.ln.Close()
	ln.mu.Lock()
	for l := range ln.links {
		ln.links[l] = l.goAwayDraining(goAwayShutdown, "shutdown")
	}
	ln.mu.Unlock()
	t := time.NewTicker(drainPoll)
	defer t.Stop()
	for {
		if ln.idle() {
			return ln.Close()
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			ln.Close()
			return ctx.Err()
		}
	}
}

// idle reports whether no accepted socket carries a logical connection.
func (ln *Listener) idle() bool {
	ln.mu.Lock()
	defer ln.mu.Unlock()
	for l, seq := range ln.links {
		if !l.drained(seq) {
			return false
		}
	}
	return true
}

// Link age (Config.MaxLinkAge): the client of a link this old is asked to
// move its logical connections to new links (GOAWAY, drain.go), which
// spreads them over the replicas a fleet has now.
const (
	// linkAgeJitter keeps the links of one client from leaving together.
	linkAgeJitter = 0.1
	// drainPoll is how often a draining link is checked for its last
	// logical connection.
	drainPoll = 10 * time.Millisecond
)

// ageLink sends l's GOAWAY at its age and closes it once its logical
// connections have left, or after the grace period.
func (ln *Listener) ageLink(l *link) {
	time.AfterFunc(jitter(ln.cfg.MaxLinkAge, linkAgeJitter), func() {
		if l.failed() {
			return
		}
		seq := l.goAwayDraining(goAwayLinkAge, "link age")
		deadline := time.Now().Add(ln.cfg.MaxLinkAgeGrace)
		t := time.NewTicker(drainPoll)
		defer t.Stop()
		for !l.drained(seq) && time.Now().Before(deadline) {
			select {
			case <-t.C:
			case <-l.done:
				return
			}
		}
		l.close()
	})
}
