// SPDX-License-Identifier: MIT

package tcpconn

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// link is the engine of one physical connection. Reading: whoever holds
// the read token (rmu) reads frames and routes them to logical connections
// (streams). A receiver with nothing queued takes the token itself when it
// is free and reads until its own message arrives, so a request/response
// round trip involves no goroutine hand-off; otherwise a background reader
// holds it and hands messages over. Writing: see writer.go. Two-level credit
// flow control (per stream and per link) keeps a slow reader from stalling
// the others and bounds what is buffered.
type link struct {
	conn   net.Conn
	tcp    *net.TCPConn // non-nil when writev is available
	cfg    *Config
	client bool
	log    *slog.Logger

	// Read side; br and pend belong to the holder of rmu.
	rmu            sync.Mutex
	br             *bufio.Reader
	pend           pendingData
	direct         atomic.Bool   // a receiver holds rmu (interrupt it with a deadline)
	parked         atomic.Int32  // receivers waiting for a message from this link
	rkick          chan struct{} // wakes the background reader
	releases       atomic.Uint64 // tokens released by receivers: the background reader stays away while they read
	lastHit        *stream       // one-entry route cache
	ctrlTokens     float64       // control-frame rate limiter
	ctrlLast       time.Time
	framesIn       atomic.Uint64 // keepalive: anything heard from the peer
	routes         sync.Map      // string -> *stream; read lock-free
	nstreams       atomic.Int64  // records in routes
	peer           hello         // written before helloDone is closed
	helloDone      chan struct{}
	recvLinkCredit atomic.Int64 // the peer may send while positive
	linkConsumed   atomic.Int64 // consumed since the last LINK_WINDOW

	// Write side (writer.go); guarded by wmu.
	wmu            sync.Mutex
	wb, wspare     *writeBatch
	writerBusy     bool
	lastFlush      int64       // nanotime when the last flush ended
	lazyPending    atomic.Bool // control frames wait in wb for the next write
	lazyTimer      *time.Timer // backstop for them
	wkick          chan struct{}
	linkSendCredit int64
	creditWake     chan struct{} // closed when credit arrives; nil if nobody waits
	werr           error         // set once the link failed
	wv             net.Buffers   // writer goroutine only; consumed by WriteTo

	catchAll  atomic.Pointer[catchAll]
	accept    func(*stream) bool
	onClose   func(*link)
	goingAway atomic.Bool // the peer sent GOAWAY: open nothing new here

	unclaimedMu sync.Mutex
	unclaimed   map[*stream]int64 // peer-opened, not yet claimed -> nanotime created

	counters linkCounters

	done     chan struct{}
	failOnce sync.Once
	err      error // valid after done is closed
}

// pendingData is a data frame whose header was read and whose payload is
// still arriving; it survives a read interrupted by a deadline.
type pendingData struct {
	active bool
	s      *stream // nil: discard
	n, got int
	cost   int64
	m      message
}

type linkCounters struct {
	messagesIn, messagesOut, bytesIn, bytesOut atomic.Uint64
}

// Stream state bits.
const (
	streamLocalClosed = 1 << iota // we sent CLOSE for this incarnation
	streamPeerClosed              // the peer closed this incarnation
)

// stream is one logical connection's record on one link: its receive queue
// and both directions of its credit.
type stream struct {
	inbox
	id      string
	queue   fifo[message] // guarded by mu
	owner   *Connection   // nil while unclaimed
	inReady bool          // guarded by the catch-all's mu

	state        atomic.Uint32
	retired      atomic.Bool  // no longer the route table's record for id
	closeAcks    atomic.Int32 // CLOSE replies still owed to us by the peer
	recvCredit   atomic.Int64
	unacked      atomic.Int64 // consumed since the last WINDOW
	sendCredit   int64        // guarded by link.wmu
	sendCreditOK bool         // guarded by link.wmu: sendCredit initialised from the peer's hello
}

// message is one received payload; pooled is non-nil when data aliases a
// small pooled buffer (bufpool.go).
type message struct {
	data   []byte
	pooled *byteBuffer
}

func (m message) cost() int64 { return int64(len(m.data)) + messageOverhead }

func (m message) release() { putPayload(m.data, m.pooled) }

// linkHooks connect a link to its owner (the client pool, the Wrap registry
// or a Listener); they are fixed before the read loop starts.
type linkHooks struct {
	accept  func(*stream) bool // offers a peer-opened record; nil: catch-all or unclaimed
	onClose func(*link)
}

func newLink(conn net.Conn, cfg *Config, client bool, hooks linkHooks) *link {
	l := &link{
		accept:    hooks.accept,
		onClose:   hooks.onClose,
		conn:      conn,
		cfg:       cfg,
		client:    client,
		br:        bufio.NewReaderSize(conn, readBufferSize),
		rkick:     make(chan struct{}, 1),
		wkick:     make(chan struct{}, 1),
		wb:        &writeBatch{},
		wspare:    &writeBatch{},
		helloDone: make(chan struct{}),
		done:      make(chan struct{}),
		unclaimed: make(map[*stream]int64),
		ctrlLast:  time.Now(),
	}
	l.lazyTimer = time.AfterFunc(time.Hour, l.lazyTimerFired)
	l.lazyTimer.Stop()
	l.ctrlTokens = float64(cfg.MaxControlFramesPerSecond)
	side := "server"
	if client {
		side = "client"
	}
	l.log = cfg.logger().With("side", side, "remote", conn.RemoteAddr().String())
	raw := conn
	if tc, ok := conn.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		l.tcp = tc
	}
	if tc, ok := raw.(*net.TCPConn); ok {
		if err := tuneTCP(tc, cfg); err != nil {
			l.log.Warn("tcpconn: socket tuning failed", "err", err)
		}
	}
	l.recvLinkCredit.Store(int64(cfg.LinkWindow))
	registerLink(l)
	l.enqueueControl(appendHello(nil, cfg.hello()))
	l.rmu.Lock() // the background reader starts with the token: HELLO first
	go l.readLoop()
	go l.writeLoop()
	go l.keepAliveLoop()
	return l
}

// ---- failure ----

// fail closes the link once with err; every blocked call on it returns.
func (l *link) fail(err error) {
	l.failOnce.Do(func() {
		if err == nil {
			err = ErrClosed
		}
		if errors.Is(err, ErrLinkLost) && !errors.Is(err, ErrHandshake) && !l.helloReceived() {
			// Lost before the peer's HELLO (a TLS handshake refused on the
			// write path, a reset): the handshake failed. Both match.
			err = fmt.Errorf("%w: %w", ErrHandshake, err)
		}
		if errors.Is(err, ErrProtocol) {
			globalCounters.protocolErrors.Add(1)
		}
		l.err = err
		l.failWrites(err)
		l.lazyTimer.Stop()
		close(l.done)
		l.conn.Close()
		l.routes.Range(func(_, v any) bool {
			v.(*stream).fail(err)
			return true
		})
		if ca := l.catchAll.Load(); ca != nil {
			ca.fail(err)
		}
		if !errors.Is(err, ErrClosed) {
			l.log.Debug("tcpconn: link closed", "err", err)
		}
		unregisterLink(l)
		if l.onClose != nil {
			l.onClose(l)
		}
	})
}

func (l *link) helloReceived() bool { return isClosed(l.helloDone) }

func (l *link) failed() bool { return isClosed(l.done) }

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

// ---- routes ----

func bytesToString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

func (l *link) newStream(id string) *stream {
	s := &stream{id: id, inbox: inbox{link: l}}
	s.recvCredit.Store(int64(l.cfg.StreamWindow))
	return s
}

// register claims id for owner on this link, taking over a record the peer
// opened first (the registration race keeps what already arrived).
func (l *link) register(id string, owner *Connection) (*stream, error) {
	for {
		if l.failed() {
			return nil, l.err
		}
		v, ok := l.routes.Load(id)
		if !ok {
			if l.nstreams.Load() >= int64(l.localStreamLimit()) {
				return nil, fmt.Errorf("%w: %d logical connections on this link", ErrTooManyStreams, l.nstreams.Load())
			}
			s := l.newStream(id)
			s.owner = owner
			if _, loaded := l.routes.LoadOrStore(id, s); loaded {
				continue
			}
			l.nstreams.Add(1)
			if l.failed() { // fail may have swept routes before the store
				s.fail(l.err)
			}
			return s, nil
		}
		s := v.(*stream)
		if s.state.Load()&streamLocalClosed != 0 || s.closeAcks.Load() > 0 {
			// A previous incarnation is still closing; start a new one that
			// inherits the CLOSE replies it must absorb.
			ns := l.newStream(id)
			ns.owner = owner
			ns.closeAcks.Store(s.closeAcks.Load())
			if l.routes.CompareAndSwap(id, s, ns) {
				s.retired.Store(true)
				return ns, nil
			}
			continue
		}
		s.mu.Lock()
		if s.owner != nil {
			s.mu.Unlock()
			return nil, fmt.Errorf("%w: %q", ErrIDInUse, id)
		}
		s.owner = owner
		s.mu.Unlock()
		l.unclaimedMu.Lock()
		delete(l.unclaimed, s)
		l.unclaimedMu.Unlock()
		return s, nil
	}
}

// localStreamLimit keeps this side within what the peer announced.
func (l *link) localStreamLimit() int {
	n := l.cfg.MaxStreams
	if l.helloReceived() {
		n = min(n, int(l.peer.maxStreams))
	}
	return n
}

// sendStream returns the record to send on for id, creating an unclaimed
// one (used by catch-all replies to IDs this side never registered).
func (l *link) sendStream(id string) (*stream, error) {
	if v, ok := l.routes.Load(id); ok {
		return v.(*stream), nil
	}
	if l.nstreams.Load() >= int64(l.localStreamLimit()) {
		return nil, ErrTooManyStreams
	}
	s := l.newStream(id)
	v, loaded := l.routes.LoadOrStore(id, s)
	if !loaded {
		l.nstreams.Add(1)
	}
	return v.(*stream), nil
}

// remove drops s from the route table if it is still the current record.
func (l *link) remove(s *stream) {
	if l.routes.CompareAndDelete(s.id, s) {
		s.retired.Store(true)
		l.nstreams.Add(-1)
	}
	l.unclaimedMu.Lock()
	delete(l.unclaimed, s)
	l.unclaimedMu.Unlock()
}

// closeStream is the local side ending s: CLOSE goes to the peer, whose reply
// retires the record.
func (l *link) closeStream(s *stream, code uint32) {
	for {
		st := s.state.Load()
		if st&streamLocalClosed != 0 {
			return
		}
		if s.state.CompareAndSwap(st, st|streamLocalClosed) {
			break
		}
	}
	if s.state.Load()&streamPeerClosed != 0 {
		l.remove(s) // the peer closed first and we already replied
		return
	}
	s.closeAcks.Add(1)
	l.enqueueControl(appendIDControl(nil, frameClose, s.id, code))
}

// ---- receiving: the read token ----

// handBackDelay is how long the token must stay unused by receivers before
// the background reader takes it again, so that control frames and
// messages for absent receivers are still read promptly. It is checked by
// the background reader's own timer rather than armed on every release:
// a timer reset per message measurably slowed round trips.
const handBackDelay = 5 * time.Millisecond

// readLoop is the background reader. It holds the token when no receiver
// reads for itself, and steps back once it has handed a message to a
// waiting receiver with nothing else buffered, so that receiver's next call
// can read directly.
func (l *link) readLoop() {
	// newLink took the token for us.
	if err := l.readHello(); err != nil {
		l.rmu.Unlock()
		l.fail(err)
		return
	}
	t := time.NewTimer(handBackDelay)
	defer t.Stop()
	for {
		if err := l.readUntil(nil); err != nil {
			return
		}
		seen := l.releases.Load()
		t.Reset(handBackDelay)
		for {
			select {
			case <-l.rkick:
			case <-t.C:
				t.Reset(handBackDelay)
				if r := l.releases.Load(); r != seen {
					seen = r // receivers are reading for themselves
					continue
				}
			case <-l.done:
				return
			}
			if l.rmu.TryLock() {
				break
			}
		}
	}
}

// readDirect lets a receiver with nothing queued read for itself if the
// token is free, until src is ready. It reports whether it did (then
// src is ready, or the link failed).
func (l *link) readDirect(src source) bool {
	l.flushLazy()
	if !l.rmu.TryLock() {
		return false
	}
	l.direct.Store(true)
	l.readUntil(src)
	return true
}

// readUntil reads frames holding the token until src is ready (a
// receiver reading for itself) or, for the background reader (src nil),
// until it may step back. It always returns with the token released; an
// error means the link failed.
func (l *link) readUntil(src source) error {
	for {
		if src != nil && isReady(src) {
			l.releaseToken()
			return nil
		}
		woke, err := l.readFrame()
		if err != nil {
			if isTimeout(err) && !l.failed() {
				// An interrupt (Close or idle timeout of a receiver reading
				// for itself); the frame in progress resumes.
				l.conn.SetReadDeadline(time.Time{})
				continue
			}
			l.direct.Store(false)
			l.rmu.Unlock()
			l.fail(readFailure(err))
			return l.linkError()
		}
		if src == nil && woke && l.parked.Load() == 0 && l.br.Buffered() == 0 {
			l.releaseToken()
			return nil
		}
	}
}

// releaseToken gives up the token: to the background reader at once if
// receivers wait, else after handBackDelay unless a receiver takes it again.
func (l *link) releaseToken() {
	l.direct.Store(false)
	l.rmu.Unlock()
	if l.parked.Load() > 0 {
		l.kickReader()
	} else {
		l.releases.Add(1)
	}
}

// ensureReader kicks the background reader if nobody holds the token (a
// holder kicks it on release when receivers are parked).
func (l *link) ensureReader() {
	l.flushLazy()
	if l.rmu.TryLock() {
		l.rmu.Unlock()
		l.kickReader()
	}
}

func (l *link) kickReader() {
	select {
	case l.rkick <- struct{}{}:
	default:
	}
}

// interruptDirect wakes a receiver blocked reading for itself, so that it
// notices Close or an idle timeout. Spurious interrupts are harmless.
func (l *link) interruptDirect() {
	if l.direct.Load() {
		l.conn.SetReadDeadline(aLongTimeAgo)
	}
}

var aLongTimeAgo = time.Unix(1, 0)

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// readFailure classifies why reading stopped.
func readFailure(err error) error {
	if errors.Is(err, ErrProtocol) || errors.Is(err, ErrHandshake) || errors.Is(err, ErrKeepAliveTimeout) || errors.Is(err, ErrClosed) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrLinkLost, err)
}

func protocolErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrProtocol}, args...)...)
}

// truncated turns a mid-frame EOF into a clear error: a peer that closes
// inside a frame broke the framing, so it is a protocol violation.
func truncated(err error, what string) error {
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: connection ended inside %s: %w", ErrProtocol, what, io.ErrUnexpectedEOF)
	}
	return err
}

// readFrame reads one frame (or resumes one) and reports whether it woke a
// waiting receiver. Headers are parsed with Peek and consumed only when
// complete, so a read interrupted by a deadline loses nothing.
func (l *link) readFrame() (bool, error) {
	if l.pend.active {
		return l.readPending()
	}
	b, err := l.br.Peek(1)
	if err != nil {
		return false, err // EOF here is a clean close between frames
	}
	l.framesIn.Add(1)
	if b[0] == controlMarker {
		return false, l.readControl()
	}
	return l.readData(int(b[0]))
}

func (l *link) readHello() error {
	if d := l.cfg.HandshakeTimeout; d > 0 {
		l.conn.SetReadDeadline(time.Now().Add(d))
	}
	b, err := l.br.Peek(2)
	if err == nil && (b[0] != controlMarker || b[1] != frameHello) {
		return fmt.Errorf("%w: first frame is not a tcpconn hello (first bytes % x): peer is not a tcpconn v%d endpoint", ErrHandshake, b, protocolVersion)
	}
	if err == nil {
		b, err = l.br.Peek(2 + sizeOfHelloBody)
	}
	if err != nil {
		if isTimeout(err) {
			return fmt.Errorf("%w: no hello from peer within %v", ErrHandshake, l.cfg.HandshakeTimeout)
		}
		return fmt.Errorf("%w: %w", ErrHandshake, truncated(err, "the hello"))
	}
	h, err := parseHelloBody(b[2:])
	if err != nil {
		return err
	}
	l.br.Discard(len(b))
	l.framesIn.Add(1)
	l.conn.SetReadDeadline(time.Time{})
	l.wmu.Lock()
	l.peer = h
	l.linkSendCredit = int64(h.linkWindow)
	if l.creditWake != nil {
		close(l.creditWake)
		l.creditWake = nil
	}
	l.wmu.Unlock()
	close(l.helloDone)
	return nil
}

func (l *link) readData(idLen int) (bool, error) {
	hdr, err := l.br.Peek(sizeOfIDLen + idLen + sizeOfLength)
	if err != nil {
		return false, truncated(err, "a data frame header")
	}
	n := loadU32(hdr[sizeOfIDLen+idLen:])
	if uint64(n) > uint64(l.cfg.MaxMessageSize) {
		return false, protocolErrorf("message of %d bytes exceeds the limit of %d", n, l.cfg.MaxMessageSize)
	}
	s, err := l.route(hdr[sizeOfIDLen : sizeOfIDLen+idLen])
	if err != nil {
		return false, err
	}
	cost := int64(n) + messageOverhead
	if l.recvLinkCredit.Add(-cost)+cost <= 0 {
		return false, protocolErrorf("peer exceeded the link window of %d bytes", l.cfg.LinkWindow)
	}
	if s.closeAcks.Load() > 0 {
		s = nil // a frame of an incarnation we already closed: read and drop it
	} else if s.recvCredit.Add(-cost)+cost <= 0 {
		return false, protocolErrorf("peer exceeded the window of %d bytes on %q", l.cfg.StreamWindow, s.id)
	}
	l.br.Discard(len(hdr))
	// Payloads go to a pooled buffer; when none is large enough, a large
	// one gets a slice that grows with the bytes that actually arrive, so a
	// header claiming a huge message cannot make us allocate it up front.
	var m message
	m.data, m.pooled = getPayload(int(n))
	l.pend = pendingData{active: true, s: s, n: int(n), cost: cost, m: m}
	return l.readPending()
}

func (l *link) readPending() (bool, error) {
	p := &l.pend
	for {
		// Read in chunks so that a long payload counts as the peer being
		// heard (keepalive) while it arrives.
		k, err := io.ReadFull(l.br, p.m.data[p.got:min(len(p.m.data), p.got+readProgressChunk)])
		p.got += k
		l.framesIn.Add(1)
		if err != nil {
			if isTimeout(err) {
				return false, err // resumable
			}
			p.m.release()
			p.active = false
			return false, truncated(err, "a message payload")
		}
		if p.got == p.n {
			break
		}
		if p.got == len(p.m.data) {
			grown := make([]byte, min(p.n, 2*p.got))
			copy(grown, p.m.data[:p.got])
			p.m.data = grown
		}
	}
	s, m, cost := p.s, p.m, p.cost
	*p = pendingData{}
	l.counters.messagesIn.Add(1)
	l.counters.bytesIn.Add(uint64(len(m.data)))
	if s == nil {
		m.release()
		l.consumedLink(cost, controlAsync)
		return false, nil
	}
	return s.deliver(m), nil
}

// route finds the record for a frame's ID, creating one for an ID the peer
// opens. It returns nil (and refuses the ID) when the local limits say no.
func (l *link) route(idb []byte) (*stream, error) {
	if s := l.lastHit; s != nil && !s.retired.Load() && s.id == string(idb) {
		return s, nil
	}
	if v, ok := l.routes.Load(bytesToString(idb)); ok {
		s := v.(*stream)
		l.lastHit = s
		return s, nil
	}
	id := string(idb)
	if n := l.nstreams.Load(); n >= int64(l.cfg.MaxStreams) {
		if n >= int64(l.cfg.MaxStreams)+int64(l.cfg.MaxStreams)/4 {
			return nil, protocolErrorf("peer opened more than %d logical connections", n)
		}
		return l.refuse(id), nil
	}
	s := l.newStream(id)
	if v, loaded := l.routes.LoadOrStore(id, s); loaded {
		return v.(*stream), nil
	}
	l.nstreams.Add(1)
	if l.accept != nil {
		if !l.accept(s) {
			l.closeStream(s, closeRefused)
			return s, nil
		}
	} else if l.catchAll.Load() == nil {
		// Nobody serves unclaimed IDs yet: expire it if never claimed.
		l.unclaimedMu.Lock()
		l.unclaimed[s] = time.Now().UnixNano()
		l.unclaimedMu.Unlock()
	}
	l.lastHit = s
	return s, nil
}

// refuse answers a new ID beyond MaxStreams with CLOSE(refused); its frames
// are discarded until the peer acknowledges.
func (l *link) refuse(id string) *stream {
	s := l.newStream(id)
	if _, loaded := l.routes.LoadOrStore(id, s); !loaded {
		l.nstreams.Add(1)
	}
	l.closeStream(s, closeRefused)
	return s
}

// allowControl charges one frame against the control-frame rate limit.
func (l *link) allowControl() error {
	limit := float64(l.cfg.MaxControlFramesPerSecond)
	now := time.Now()
	l.ctrlTokens = min(limit, l.ctrlTokens+now.Sub(l.ctrlLast).Seconds()*limit)
	l.ctrlLast = now
	if l.ctrlTokens < 1 {
		return protocolErrorf("control frame flood (more than %d per second)", l.cfg.MaxControlFramesPerSecond)
	}
	l.ctrlTokens--
	return nil
}

// controlBodySize is the fixed part of each control frame after its type.
var controlBodySize = [frameTypeLimit]int{
	frameHello:      sizeOfHelloBody,
	frameWindow:     sizeOfIDLen, // then id and u32
	frameLinkWindow: sizeOfLength,
	frameClose:      sizeOfIDLen, // then id and u32
	framePing:       sizeOfLength,
	framePong:       sizeOfLength,
	frameGoAway:     sizeOfLength + sizeOfIDLen, // then reason
}

func (l *link) readControl() error {
	b, err := l.br.Peek(sizeOfIDLen + sizeOfType)
	if err != nil {
		return truncated(err, "a control frame")
	}
	typ := b[1]
	if int(typ) >= len(controlBodySize) || controlBodySize[typ] == 0 {
		return protocolErrorf("unknown control frame type 0x%02x", typ)
	}
	const head = sizeOfIDLen + sizeOfType
	size := head + controlBodySize[typ]
	if b, err = l.br.Peek(size); err != nil {
		return truncated(err, frameName(typ))
	}
	switch typ {
	case frameWindow, frameClose, frameGoAway:
		// Variable part: an ID (WINDOW, CLOSE) or a reason (GOAWAY), whose
		// length byte is the last byte of the fixed body.
		n := int(b[size-1])
		if typ != frameGoAway {
			if n > maxIDLen {
				return protocolErrorf("%s with ID length %d", frameName(typ), n)
			}
			n += sizeOfLength
		}
		size += n
		if b, err = l.br.Peek(size); err != nil {
			return truncated(err, frameName(typ))
		}
	}
	body := b[head:]
	switch typ {
	case frameHello:
		err = protocolErrorf("second HELLO")
	case frameWindow:
		err = l.onWindow(body[1:len(body)-sizeOfLength], loadU32(body[len(body)-sizeOfLength:]))
	case frameClose:
		err = l.onCloseFrame(body[1:len(body)-sizeOfLength], loadU32(body[len(body)-sizeOfLength:]))
	case frameLinkWindow:
		err = l.addSendCredit(nil, loadU32(body))
	case framePing:
		if err = l.allowControl(); err == nil {
			var fb [sizeOfIDLen + sizeOfType + sizeOfLength]byte
			l.enqueueControl(appendValueControl(fb[:0], framePong, loadU32(body)))
		}
	case framePong:
		err = l.allowControl()
	case frameGoAway:
		err = l.onGoAway(loadU32(body), string(body[sizeOfLength+sizeOfIDLen:]))
	}
	l.br.Discard(size)
	return err
}

func (l *link) onGoAway(code uint32, reason string) error {
	if l.goingAway.Swap(true) {
		return l.allowControl()
	}
	l.log.Debug("tcpconn: peer is going away", "code", code, "reason", reason)
	return nil
}

func (l *link) onWindow(idb []byte, inc uint32) error {
	v, ok := l.routes.Load(bytesToString(idb))
	if !ok {
		// Credit for a record we already retired; harmless but charged so a
		// peer cannot make us spin on it.
		return l.allowControl()
	}
	return l.addSendCredit(v.(*stream), inc)
}

// addSendCredit applies a WINDOW (s != nil) or LINK_WINDOW. Credit beyond the
// announced window can only come from a broken or hostile peer.
func (l *link) addSendCredit(s *stream, inc uint32) error {
	if inc == 0 {
		return l.allowControl()
	}
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if s == nil {
		l.linkSendCredit += int64(inc)
		if l.linkSendCredit > int64(l.peer.linkWindow) {
			return protocolErrorf("LINK_WINDOW overflows the announced %d bytes", l.peer.linkWindow)
		}
	} else {
		if !s.sendCreditOK {
			s.sendCredit, s.sendCreditOK = int64(l.peer.streamWindow), true
		}
		s.sendCredit += int64(inc)
		if s.sendCredit > int64(l.peer.streamWindow) {
			return protocolErrorf("WINDOW on %q overflows the announced %d bytes", s.id, l.peer.streamWindow)
		}
	}
	if l.creditWake != nil {
		close(l.creditWake)
		l.creditWake = nil
	}
	return nil
}

func (l *link) onCloseFrame(idb []byte, code uint32) error {
	v, ok := l.routes.Load(bytesToString(idb))
	if !ok {
		return l.allowControl() // nothing to close: charged like a ping
	}
	s := v.(*stream)
	if s.closeAcks.Load() > 0 {
		// The reply to a CLOSE of ours (or a crossing CLOSE).
		if s.closeAcks.Add(-1) == 0 && s.state.Load()&streamLocalClosed != 0 {
			l.remove(s)
		}
		return nil
	}
	// The peer ends the current incarnation: acknowledge, retire the
	// record, and let the owner drain what already arrived.
	s.state.Or(streamPeerClosed)
	l.enqueueControl(appendIDControl(nil, frameClose, s.id, closeNormal))
	l.remove(s)
	s.mu.Lock()
	unclaimed := s.owner == nil
	s.mu.Unlock()
	if unclaimed {
		if err := l.allowControl(); err != nil { // open-then-reset churn
			return err
		}
	}
	err := ErrPeerClosed
	if code == closeRefused {
		err = ErrRefused
	}
	s.fail(err)
	return nil
}

// consumedLink returns link credit as messages leave the link.
// how is a control* constant: user goroutines may write inline or lazily.
func (l *link) consumedLink(cost int64, how int) {
	if l.linkConsumed.Add(cost) >= int64(l.cfg.LinkWindow)/2 {
		if v := l.linkConsumed.Swap(0); v > 0 {
			l.recvLinkCredit.Add(v)
			var fb [sizeOfIDLen + sizeOfType + sizeOfLength]byte
			l.queueControl(appendValueControl(fb[:0], frameLinkWindow, uint32(v)), how)
		}
	}
}

// ---- keepalive and unclaimed-record expiry ----

func (l *link) keepAliveLoop() {
	interval := l.cfg.KeepAliveInterval
	if interval <= 0 {
		interval = time.Hour
	}
	// A quarter-interval tick measures silence to within a tick, so a dead
	// peer is noticed within KeepAliveTimeout plus half an interval (a tick
	// of a whole interval made that up to two intervals late).
	tick := min(interval/4, max(l.cfg.IdleTimeout/4, time.Second))
	if l.cfg.IdleTimeout <= 0 {
		tick = interval / 4
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	lastSeen, lastHeard := l.framesIn.Load(), time.Now()
	var pings uint32
	var lastPing time.Time
	for {
		select {
		case <-l.done:
			return
		case now := <-t.C:
			if seen := l.framesIn.Load(); seen != lastSeen {
				lastSeen, lastHeard = seen, now
			}
			if l.cfg.KeepAliveInterval > 0 {
				silent := now.Sub(lastHeard)
				if silent >= l.cfg.KeepAliveTimeout {
					l.fail(fmt.Errorf("%w: nothing heard for %v", ErrKeepAliveTimeout, silent.Round(time.Millisecond)))
					return
				}
				if silent >= l.cfg.KeepAliveInterval && now.Sub(lastPing) >= l.cfg.KeepAliveInterval-tick/2 {
					lastPing = now
					pings++
					l.enqueueControl(appendValueControl(nil, framePing, pings))
				}
			}
			l.expireUnclaimed(now)
		}
	}
}

// expireUnclaimed retires peer-opened records nobody claimed within the idle
// timeout, telling the peer with CLOSE so nothing vanishes silently.
func (l *link) expireUnclaimed(now time.Time) {
	if l.cfg.IdleTimeout <= 0 {
		return
	}
	limit := now.Add(-l.cfg.IdleTimeout).UnixNano()
	var expired []*stream
	l.unclaimedMu.Lock()
	for s, born := range l.unclaimed {
		if born < limit {
			expired = append(expired, s)
			delete(l.unclaimed, s)
		}
	}
	l.unclaimedMu.Unlock()
	for _, s := range expired {
		s.mu.Lock()
		claimed := s.owner != nil
		s.mu.Unlock()
		if !claimed && l.catchAll.Load() == nil {
			s.fail(ErrIdleTimeout)
			l.closeStream(s, closeNormal)
			s.drain()
		}
	}
}

// ---- stream side ----

// deliver queues m and wakes whoever waits for it; it reports whether it
// woke a receiver.
func (s *stream) deliver(m message) bool {
	s.mu.Lock()
	s.queue.push(m)
	woke := s.wakeLocked()
	unclaimed := s.owner == nil
	s.mu.Unlock()
	if unclaimed {
		if ca := s.link.catchAll.Load(); ca != nil {
			woke = ca.push(s) || woke
		}
	}
	return woke
}

// popMessageLocked takes the oldest queued message.
func (s *stream) popMessageLocked() (message, bool) { return s.queue.pop() }

func (s *stream) popLocked() (*stream, message, bool) {
	m, ok := s.popMessageLocked()
	return s, m, ok
}

func (s *stream) hasMessageLocked() bool { return s.queue.len() > 0 }

// fifo is a queue that reuses its slice; it drops a burst's worth of slots
// once drained so an idle connection does not keep them.
type fifo[T any] struct {
	items []T
	head  int
}

func (q *fifo[T]) len() int { return len(q.items) - q.head }

func (q *fifo[T]) push(v T) { q.items = append(q.items, v) }

func (q *fifo[T]) pop() (T, bool) {
	var zero T
	if q.head == len(q.items) {
		return zero, false
	}
	v := q.items[q.head]
	q.items[q.head] = zero
	q.head++
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
		if cap(q.items) > 64 {
			q.items = nil
		}
	}
	return v, true
}

// consumed returns credit for a message that left the queue.
func (s *stream) consumed(cost int64) {
	l := s.link
	if s.unacked.Add(cost) >= int64(l.cfg.StreamWindow)/2 && s.state.Load() == 0 {
		if v := s.unacked.Swap(0); v > 0 {
			s.recvCredit.Add(v)
			var fb [maxControlFrame]byte
			l.queueControl(appendIDControl(fb[:0], frameWindow, s.id, uint32(v)), controlLazy)
		}
	}
	l.consumedLink(cost, controlLazy)
}

// drain releases every queued message (the owner is gone).
func (s *stream) drain() {
	s.mu.Lock()
	var total int64
	for {
		m, ok := s.popMessageLocked()
		if !ok {
			break
		}
		total += m.cost()
		m.release()
	}
	s.mu.Unlock()
	if total > 0 {
		s.link.consumedLink(total, controlInline)
	}
}

// ---- receiving: one loop for streams and the catch-all ----

// inbox is what a receiver waits on: a stream's queue or a link's
// catch-all. It holds the lock, the error that ends it, and at most one
// parked receiver's wake-up (a second concurrent receiver of one
// Connection finds the first parked and parks on the same channel).
type inbox struct {
	link    *link
	mu      sync.Mutex
	notify  chan struct{} // created on first wait
	waiting bool
	err     error // why no more messages will come; queued ones stay readable
}

// source is an inbox with its queue discipline.
type source interface {
	box() *inbox
	popLocked() (*stream, message, bool) // the message and the record it came from
	hasMessageLocked() bool
}

func (b *inbox) box() *inbox { return b }

func (b *inbox) wakeLocked() bool {
	if !b.waiting {
		return false
	}
	b.waiting = false
	b.link.parked.Add(-1)
	b.notify <- struct{}{} // capacity 1, one waiter: never blocks
	return true
}

// fail records why no more messages will arrive and wakes the receiver.
func (b *inbox) fail(err error) {
	b.mu.Lock()
	if b.err == nil {
		b.err = err
	}
	b.wakeLocked()
	b.mu.Unlock()
	b.link.interruptDirect()
}

// unpark withdraws a waiting receiver that was not woken.
func (b *inbox) unpark() {
	b.mu.Lock()
	if b.waiting {
		b.waiting = false
		b.link.parked.Add(-1)
	}
	select {
	case <-b.notify: // a wake-up that raced with us
	default:
	}
	b.mu.Unlock()
}

// isReady reports whether receive would return at once.
func isReady(src source) bool {
	b := src.box()
	b.mu.Lock()
	defer b.mu.Unlock()
	return src.hasMessageLocked() || b.err != nil
}

// receive waits for src's next message; cancel closes when the caller gives
// up. Without cancel (plain Receive) the caller reads the socket itself when
// nobody else does: no hand-off between goroutines on a round trip.
func receive(src source, cancel <-chan struct{}) (*stream, message, error) {
	b := src.box()
	l := b.link
	for {
		b.mu.Lock()
		if s, m, ok := src.popLocked(); ok {
			b.mu.Unlock()
			s.consumed(m.cost())
			return s, m, nil
		}
		if b.err != nil {
			err := b.err
			b.mu.Unlock()
			return nil, message{}, err
		}
		if cancel == nil && !l.failed() {
			b.mu.Unlock()
			if l.readDirect(src) {
				continue
			}
			b.mu.Lock()
			if src.hasMessageLocked() || b.err != nil {
				b.mu.Unlock()
				continue
			}
		}
		if b.notify == nil {
			b.notify = make(chan struct{}, 1)
		}
		b.waiting = true
		l.parked.Add(1)
		ch := b.notify
		b.mu.Unlock()
		if cancel == nil {
			// Whoever held the token may have released it before seeing
			// us parked: try again to read for ourselves.
			if l.readDirect(src) {
				b.unpark()
				continue
			}
		} else {
			l.ensureReader()
		}
		select {
		case <-ch:
		case <-cancel:
			b.unpark()
			return nil, message{}, errCanceled
		}
	}
}

// ---- catch-all ----

// catchAll is the empty-ID connection of a link: it receives messages of
// every record no one has claimed, oldest ready record first.
type catchAll struct {
	inbox
	ready fifo[*stream] // records holding messages, oldest first; guarded by mu
}

func (ca *catchAll) push(s *stream) bool {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if !s.inReady {
		s.inReady = true
		ca.ready.push(s)
	}
	return ca.wakeLocked()
}

func (ca *catchAll) hasMessageLocked() bool { return ca.ready.len() > 0 }

// popLocked takes a message from the oldest ready record still unclaimed,
// keeping the record in line if it holds more.
func (ca *catchAll) popLocked() (*stream, message, bool) {
	for {
		s, ok := ca.ready.pop()
		if !ok {
			return nil, message{}, false
		}
		s.inReady = false
		s.mu.Lock()
		var m message
		ok = s.owner == nil
		if ok {
			m, ok = s.popMessageLocked()
		}
		more := s.hasMessageLocked()
		s.mu.Unlock()
		if !ok {
			continue
		}
		if more {
			s.inReady = true
			ca.ready.push(s)
		}
		return s, m, true
	}
}

// installCatchAll makes ca the link's catch-all and hands it every
// unclaimed record that already holds messages.
func (l *link) installCatchAll(ca *catchAll) bool {
	if !l.catchAll.CompareAndSwap(nil, ca) {
		return false
	}
	l.routes.Range(func(_, v any) bool {
		s := v.(*stream)
		s.mu.Lock()
		has := s.owner == nil && s.hasMessageLocked()
		s.mu.Unlock()
		if has {
			ca.push(s)
		}
		return true
	})
	if l.failed() {
		ca.fail(l.err)
	}
	return true
}
