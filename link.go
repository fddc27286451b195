// SPDX-License-Identifier: MIT

package tcpconn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/google/uuid"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// link is the engine of one physical connection: its lifecycle
// (newLink, fail, close) and the parts that own the rest of its state.
//
//	read token   token.go       who reads the socket: a receiver for itself, or the background reader
//	reading      reader.go      the token holder's state: frame reader (readbuf.go), the payload being
//	                            read, messages in parts, readInto, control-frame limiter (limiter.go)
//	parser       parser.go      bytes in, a typed frame header out; demux.go dispatches on it
//	routes       routes.go      records by ID, catch-all, Listener accept, unclaimed IDs
//	records      stream.go      one ID's queue and windows, and the record lifecycle
//	flow         flow.go        inflow (credit the peer has, the window it grows in), outflow (credit spent)
//	write queue  writequeue.go  the ordered batch of frames and its single writer (writer.go writes it)
//	scheduler    scheduler.go   which parts of messages in parts go into the next write
//	keepalive    keepalive.go   frames heard, PING/PONG round trips, silence, unclaimed-ID expiry
//	bulk lane    lane.go        a second socket for large messages: opening, writer, reader;
//	                            laneorder.go holds an ID's messages behind one still on it
//
// A byte that arrives goes: token (whoever holds it reads) -> frame reader
// -> parser -> routes (its record) -> flow (charged) -> record (queued,
// or read straight into its receiver's buffer) -> Receive. A Send goes:
// flow (credit) -> write queue (copied or referenced; a message in parts
// goes to the scheduler) -> one writev by the sender itself or by the
// writer goroutine.
//
// Concurrency:
//
//   - Goroutines: readLoop (background reader) is the only one an idle
//     link keeps, and none while a receiver reads for itself (it sleeps,
//     awaitToken); it ends when done is closed. A writer goroutine (flush)
//     runs only while frames are written behind senders, and keepalive
//     runs from a timer (keepalive.go). User goroutines read (holding the
//     token) and write (inline flush) too. A link with a bulk lane has its
//     reader (laneReadLoop) and, while lane messages are written, its
//     writer (laneWriteLoop, run by the sender that finds it idle, like
//     an inline flush); openLane runs while a lane is dialled.
//
//   - The read token: held by the background reader or by one receiver
//     reading for itself; reading and routes.lastHit belong to its holder.
//     Only its holder parses frames, so the route table is written by the
//     holder (peer-opened records) and by register/sendStream (local
//     records), never by two parsers.
//
//   - Locks, in the order they may be taken (a lock may be held while
//     taking one below it, never one above it):
//
//     Connection.mu        binding, idle release, Close; never held across a dial, a wait for the peer or a write
//     Client.mu            the Client's Connections (forget, under Connection.mu on Close)
//     Client.fleetMu       the Client's fleets by target (release, under Connection.mu on Close)
//     fleet.mu             a target's endpoints, their health and lookups; taken alone but under fleetMu
//     clientPool.mu        pool entries by address
//     poolEntry.mu         one address's link, users and backoff
//     wrapRegistry.mu      wrapped sockets (a server Connection's last release)
//     carried.mu           a client's messages kept from a binding it left
//     readToken.mu         the read token: held across socket reads, never while holding a lock above
//     Listener.mu          accepted links and the accept backlog (the token holder offers records)
//     catchAll.mu          a catch-all's ready line (inbox lock)
//     stream.mu            a record's queue, owner and waiters (inbox lock)
//     routeTable.unclaimedMu  unclaimed records
//     keepAlive.mu         a tick against stop
//     writeQueue.mu        the write queue, scheduler, outflows and lane state: never held across a socket write
//     lane.mu              a lane's queue of messages being written
//     laneInbox.mu         messages announced by BULK, waiting for their bytes on the lane
//     laneRegistry.mu      the accepting side's links that take lanes, by ID
//
//   - Who fails the link: any goroutine that sees a read or write error,
//     a protocol violation (the token holder), keepalive, or close; fail runs
//     once, closes done, closes the socket, and wakes every waiter (inboxes,
//     credit waiters, queued writers).
//
//   - What may block: the token holder in Read (interrupted with a read
//     deadline by interruptDirect; a receiver with a context that can be
//     canceled never waits there: it reads with noWait, or not at all), the
//     flusher in Write (bounded by TCP_USER_TIMEOUT and keepalive, and by
//     closeWriteTimeout on close); waits for messages or credit always also
//     wake on the link's failure, on their Connection's Close and on their
//     caller's context.
type link struct {
	conn   net.Conn
	tcp    *net.TCPConn // non-nil when writev is available
	sock   *net.TCPConn // the TCP socket, under TLS too; nil for other net.Conns
	cfg    *Config
	client bool
	// endpoint is the address a client dialled (its pool entry's), which
	// log records and LinkStats carry; empty on a server.
	endpoint string
	log      atomic.Pointer[slog.Logger] // logger(); carries the link's ID
	id       atomic.Pointer[uuid.UUID]   // set by setID: ours, or the dialler's once its HELLO is in
	scope    *scope                      // the owner's counters (stats.go)
	bound    atomic.Int64                // Connections bound to this link (Stats.Connections)

	// Read side: the read token, and what belongs to its holder.
	token     readToken
	reading   readState    // the token holder's
	landings  atomic.Int32 // buffers parked receivers offer (landing.go)
	routes    routeTable
	inflow    linkInflow // what the peer may send on this link, and the Budget it holds from
	outflow   outflow    // what this side has sent of the peer's link window; guarded by wq.mu
	peer      hello      // written before helloDone is closed
	helloDone chan struct{}

	// Write side (writer.go): the ordered queue of frames, and the
	// scheduler of messages in parts; both guarded by wq.mu.
	wq    writeQueue
	sched partScheduler

	lanes laneSet // the bulk lane (lane.go)

	onClose    func(*link)
	goAwayHook func(*link, goAwayCode) // called once, on a goroutine of its own
	goingAway  atomic.Bool             // the peer sent GOAWAY: open nothing new here
	moveAway   atomic.Bool             // a client's: that GOAWAY asked for its IDs to move (drain.go)
	handedOff  atomic.Bool             // the socket became another link's bulk lane: not ours to close
	lingering  atomic.Bool             // close's FIN is out; reading on until the peer's (finishClose)
	// drainingLanes: this side sent a draining GOAWAY; like a link whose
	// peer sent one (goingAway), it puts no new message on its lane, so
	// that the messages of IDs moving away stay on one socket.
	drainingLanes atomic.Bool

	counters  linkCounters
	keepAlive keepAlive

	done     chan struct{}
	dead     atomic.Bool // set just before done is closed: failed() is on every hot path, a channel poll is not free
	failOnce sync.Once
	err      error // valid after done is closed, and once dead is set
}

// linkHooks connect a link to its owner (the client pool, the Wrap registry
// or a Listener); they are fixed before the read loop starts.
type linkHooks struct {
	accept   func(*stream) bool // offers a peer-opened record; nil: catch-all or unclaimed
	onClose  func(*link)
	onGoAway func(*link, goAwayCode)                     // a client's: the peer's first GOAWAY
	scope    *scope                                      // whose Stats count the link (besides the process's)
	dialLane func(ctx context.Context) (net.Conn, error) // the dialling side's way to open a bulk lane
	endpoint string                                      // a client's: the address dialled, for log records
}

func newLink(conn net.Conn, cfg *Config, client bool, hooks linkHooks) *link {
	if hooks.scope == nil {
		hooks.scope = new(scope) // counted by the process only
	}
	l := &link{
		onClose:    hooks.onClose,
		goAwayHook: hooks.onGoAway,
		scope:      hooks.scope,
		conn:       conn,
		cfg:        cfg,
		client:     client,
		helloDone:  make(chan struct{}),
		done:       make(chan struct{}),
	}
	l.token.init()
	l.wq.init()
	l.routes.accept = hooks.accept
	l.lanes.dial = hooks.dialLane
	l.sched.burst = cfg.FrameSize
	l.reading.limiter.init(cfg.MaxControlFramesPerSecond, time.Now())
	id := uuid.New()
	l.endpoint = hooks.endpoint
	l.setID(id) // a server adopts the client's when its HELLO arrives
	raw := conn
	if tc, ok := conn.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		l.tcp = tc
	}
	l.reading.br = newFrameReader(conn, l.tcp)
	l.reading.br.progress = &l.keepAlive.heard
	if tc, ok := raw.(*net.TCPConn); ok {
		l.sock = tc
		if err := tuneTCP(tc, cfg); err != nil {
			l.logger().Warn("tcpconn: socket tuning failed", "err", err)
		}
	}
	l.inflow.init(int64(cfg.LinkWindow), nanotime())
	l.inflow.budget = cfg.budget()
	processScope.add(l)
	l.scope.add(l)
	h := cfg.hello()
	h.linkID = id
	l.enqueueControl(appendHello(nil, h))
	l.token.mu.Lock() // the background reader starts with the token: HELLO first
	l.startKeepAlive()
	go l.readLoop()
	return l
}

// fail closes the link once with err; every blocked call on it returns.
func (l *link) fail(err error) {
	l.failOnce.Do(func() {
		if err == nil || l.lingering.Load() {
			err = ErrClosed // a lingering close ends as the close it is, however the peer answers
		}
		if errors.Is(err, ErrLinkLost) && !errors.Is(err, ErrHandshake) && !l.helloReceived() {
			// Lost before the peer's HELLO (a TLS handshake refused on the
			// write path, a reset): the handshake failed. Both match.
			err = fmt.Errorf("%w: %w", ErrHandshake, err)
		}
		if errors.Is(err, ErrProtocol) {
			processScope.protocolErrors.Add(1)
			l.scope.protocolErrors.Add(1)
		}
		l.err = err
		// Failed from here on: a Connection that unbinds while the rest
		// runs reports err, not a close of its own.
		l.dead.Store(true)
		close(l.done)
		l.failWrites(err)
		l.failLane(err)
		if id := l.id.Load(); !l.client && id != nil {
			laneTargets.remove(*id, l)
		}
		l.keepAlive.stop()
		l.inflow.window.release(l.inflow.budget)
		if !l.handedOff.Load() {
			l.conn.Close()
		}
		l.routes.each(func(s *stream) bool {
			s.fail(err)
			return true
		})
		if ca := l.routes.catchAll.Load(); ca != nil {
			ca.fail(err)
		} else {
			l.drainUnowned()
		}
		l.logger().Debug("tcpconn: link closed", "err", err)
		processScope.remove(l)
		l.scope.remove(l)
		if l.onClose != nil {
			l.onClose(l)
		}
	})
}

func (l *link) helloReceived() bool { return isClosed(l.helloDone) }

func (l *link) failed() bool { return l.dead.Load() }

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// linkError is what callers see once the link is gone.
func (l *link) linkError() error {
	<-l.done
	return l.err
}

// close ends l gracefully without waiting: a GOAWAY goes behind everything
// already queued (the CLOSE frames of its last users), and the flush that
// writes it half-closes the socket; the link ends at the peer's FIN
// (finishClose). A stalled peer is cut off after closeWriteTimeout.
func (l *link) close() {
	l.wq.mu.Lock()
	if l.wq.sealedLocked() {
		// After a LANE, a GOAWAY would reach the peer's lane reader (its
		// link fails with a protocol error); this link is ending with
		// ErrBulkLane anyway.
		l.wq.mu.Unlock()
		return
	}
	l.wq.closing = true
	var fb [maxControlFrame]byte
	l.wq.wb.appendCopy(appendGoAway(fb[:0], 0, "closing"), nil)
	l.kickWriterLocked()
	l.wq.mu.Unlock()
	l.conn.SetWriteDeadline(time.Now().Add(closeWriteTimeout))
}

// finishClose runs once the GOAWAY of close is written. On TCP it sends
// FIN and lingers: the link reads on until the peer's FIN (the peer answers
// our GOAWAY with its own close), at most closeWriteTimeout, and only then
// ends. Frames the peer sent before it read our GOAWAY still arrive and are
// taken (a message queued for a record stays readable after the link
// ends), and the socket is not closed with input unread, which makes the
// kernel send a RST and drop what it has not sent yet. Ending the link at
// once lost the last large reply of drained links (TestMoveOnLinkAge, 1
// run in 40 under load); ending it at once and only closing the socket
// later did too, so reading on until the peer's FIN is what keeps it.
func (l *link) finishClose() {
	if l.tcp == nil {
		l.fail(ErrClosed)
		return
	}
	l.lingering.Store(true)
	l.tcp.CloseWrite() // whoever reads next (the background reader, if nobody) sees the peer's FIN and fails the link
	time.AfterFunc(closeWriteTimeout, func() { l.fail(ErrClosed) })
}
