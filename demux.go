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

// link is the engine of one physical connection: one read loop that routes
// frames to logical connections (streams), a flat-combining writer that
// batches concurrent senders into one writev, and two-level credit flow
// control (per stream and per link) so that a slow reader never stalls the
// others and buffered memory is bounded.
type link struct {
	conn   net.Conn
	tcp    *net.TCPConn // non-nil when writev is available
	cfg    *Config
	client bool
	log    *slog.Logger
	br     *bufio.Reader

	routes   sync.Map     // string -> *stream; read lock-free by the read loop
	nstreams atomic.Int64 // records in routes
	lastHit  *stream      // read loop only: one-entry route cache

	peer      hello // written before helloDone is closed
	helloDone chan struct{}

	// Receive-side credit: the peer may send while these are positive.
	recvLinkCredit atomic.Int64
	linkConsumed   atomic.Int64 // consumed since the last LINK_WINDOW

	// Write side; everything below wmu is guarded by it.
	wmu            sync.Mutex
	wqueue         []*writeReq
	wspare         []*writeReq
	flushing       bool
	linkSendCredit int64
	creditWake     chan struct{} // closed when credit arrives; nil if nobody waits
	werr           error         // set once the link failed
	wbufs          net.Buffers   // flusher only
	wv             net.Buffers   // flusher only; consumed by WriteTo

	catchAll  atomic.Pointer[catchAll]
	accept    func(*stream) bool
	onClose   func(*link)
	goingAway atomic.Bool // the peer sent GOAWAY: open nothing new here

	unclaimedMu sync.Mutex
	unclaimed   map[*stream]int64 // peer-opened, not yet claimed -> nanotime created

	ctrlTokens float64 // read loop only: control-frame rate limiter
	ctrlLast   time.Time

	framesIn atomic.Uint64 // keepalive: anything heard from the peer
	counters linkCounters

	done     chan struct{}
	failOnce sync.Once
	err      error // valid after done is closed
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
	id   string
	link *link

	mu      sync.Mutex
	queue   []message
	head    int
	notify  chan struct{} // created on first wait
	waiting bool
	owner   *Connection // nil while unclaimed
	err     error       // why no more messages will come
	inReady bool        // guarded by the catch-all's mu

	state        atomic.Uint32
	retired      atomic.Bool  // no longer the route table's record for id
	closeAcks    atomic.Int32 // CLOSE replies still owed to us by the peer
	recvCredit   atomic.Int64
	unacked      atomic.Int64 // consumed since the last WINDOW
	sendCredit   int64        // guarded by link.wmu
	sendCreditOK bool         // guarded by link.wmu: sendCredit initialised from the peer's hello
}

// message is one received payload; pooled is non-nil when data aliases a
// pooled buffer.
type message struct {
	data   []byte
	pooled *byteBuffer
}

func (m message) cost() int64 { return int64(len(m.data)) + messageOverhead }

func (m message) release() {
	if m.pooled != nil {
		putPayload(m.pooled)
	}
}

// writeReq is one frame waiting for the writer: a header (or a whole control
// frame) and an optional payload that is written without being copied.
type writeReq struct {
	hdr    []byte // points into buf
	buf    [maxControlFrame]byte
	data   []byte
	err    error
	done   chan struct{} // reused; signalled when written or when this goroutine must lead
	wait   bool          // a goroutine is blocked on done
	leader bool          // woken to take over flushing
	msgs   uint64        // data frames in this request (0 or 1)
}

const maxControlFrame = sizeOfIDLen + sizeOfType + sizeOfIDLen + maxIDLen + sizeOfLength

var writeReqPool = sync.Pool{New: func() any { return &writeReq{done: make(chan struct{}, 1)} }}

func getWriteReq() *writeReq { return writeReqPool.Get().(*writeReq) }

func putWriteReq(r *writeReq) {
	r.data, r.err, r.wait, r.leader, r.msgs = nil, nil, false, false, 0
	writeReqPool.Put(r)
}

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
		helloDone: make(chan struct{}),
		done:      make(chan struct{}),
		unclaimed: make(map[*stream]int64),
		ctrlLast:  time.Now(),
	}
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
	go l.readLoop()
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
		l.wmu.Lock()
		l.werr = err
		l.err = err
		if l.creditWake != nil {
			close(l.creditWake)
			l.creditWake = nil
		}
		l.wmu.Unlock()
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

func (l *link) helloReceived() bool {
	select {
	case <-l.helloDone:
		return true
	default:
		return false
	}
}

func (l *link) failed() bool {
	select {
	case <-l.done:
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
	s := &stream{id: id, link: l}
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
	select {
	case <-l.helloDone:
		n = min(n, int(l.peer.maxStreams))
	default:
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

// ---- sending ----

// send writes one data frame for s, waiting for credit; data is not copied
// and may be reused by the caller once send returns.
func (l *link) send(done <-chan struct{}, s *stream, data []byte) error {
	cost := int64(len(data)) + messageOverhead
	r := getWriteReq()
	r.hdr = appendDataHeader(r.buf[:0], s.id, len(data))
	r.data = data
	r.msgs = 1
	for {
		l.wmu.Lock()
		if l.werr != nil {
			l.wmu.Unlock()
			putWriteReq(r)
			return l.linkError()
		}
		if st := s.state.Load(); st != 0 {
			l.wmu.Unlock()
			putWriteReq(r)
			if st&streamPeerClosed != 0 {
				return ErrPeerClosed
			}
			return ErrClosed
		}
		if !s.sendCreditOK && l.peer.version != 0 {
			s.sendCredit, s.sendCreditOK = int64(l.peer.streamWindow), true
		}
		if l.peer.version != 0 && uint64(len(data)) > uint64(l.peer.maxMessage) {
			l.wmu.Unlock()
			putWriteReq(r)
			return fmt.Errorf("%w: %d bytes, the peer accepts at most %d", ErrMessageTooLarge, len(data), l.peer.maxMessage)
		}
		if s.sendCreditOK && s.sendCredit > 0 && l.linkSendCredit > 0 {
			s.sendCredit -= cost
			l.linkSendCredit -= cost
			break
		}
		if l.creditWake == nil {
			l.creditWake = make(chan struct{})
		}
		wake := l.creditWake
		l.wmu.Unlock()
		select {
		case <-wake:
		case <-done:
			putWriteReq(r)
			return errCanceled
		}
	}
	r.wait = true
	return l.enqueueLocked(r)
}

// errCanceled tells the caller that its done channel fired; the caller knows
// which error that stands for.
var errCanceled = errors.New("tcpconn: canceled")

// enqueueControl queues a control frame without waiting for it; if nobody is
// flushing, a goroutine is started so the read loop never blocks on a write.
func (l *link) enqueueControl(frame []byte) {
	r := getWriteReq()
	r.hdr = append(r.buf[:0], frame...)
	l.wmu.Lock()
	if l.werr != nil {
		l.wmu.Unlock()
		putWriteReq(r)
		return
	}
	l.wqueue = append(l.wqueue, r)
	if l.flushing {
		l.wmu.Unlock()
		return
	}
	l.flushing = true
	l.wmu.Unlock()
	go l.flushLoop(nil)
}

// enqueueLocked appends r (l.wmu held) and either becomes the flusher or
// waits for the current one to write r. It returns r's write error.
func (l *link) enqueueLocked(r *writeReq) error {
	l.wqueue = append(l.wqueue, r)
	if l.flushing {
		l.wmu.Unlock()
		<-r.done
		if r.leader {
			r.leader = false
			l.flushLoop(r)
		}
	} else {
		l.flushing = true
		l.wmu.Unlock()
		l.flushLoop(r)
	}
	err := r.err
	putWriteReq(r)
	return err
}

// maxFlushRounds bounds how many batches one sender writes for others
// before handing the flusher role to a waiting sender.
const maxFlushRounds = 4

// flushLoop writes queued frames in batches until the queue is empty. self
// is the caller's own request (nil for a helper goroutine); it is always in
// the first batch, so the caller can leave after handing off.
func (l *link) flushLoop(self *writeReq) {
	for round := 0; ; round++ {
		l.wmu.Lock()
		if len(l.wqueue) == 0 || l.werr != nil {
			l.flushing = false
			rest := l.wqueue
			l.wqueue = l.wqueue[:0]
			err := l.werr
			l.wmu.Unlock()
			l.finish(rest, self, err)
			return
		}
		if round >= maxFlushRounds && self != nil {
			if next := l.firstWaiterLocked(); next != nil {
				next.leader = true
				l.wmu.Unlock()
				next.done <- struct{}{}
				return
			}
		}
		batch := l.wqueue
		l.wqueue = l.wspare[:0]
		l.wmu.Unlock()

		err := l.writeBatch(batch)
		if err != nil {
			l.fail(fmt.Errorf("%w: write: %w", ErrLinkLost, err))
			err = l.linkError()
		}
		l.finish(batch, self, err)
		clear(batch)
		l.wmu.Lock()
		l.wspare = batch[:0]
		l.wmu.Unlock()
	}
}

func (l *link) firstWaiterLocked() *writeReq {
	for _, r := range l.wqueue {
		if r.wait {
			return r
		}
	}
	return nil
}

// finish reports err to every request in batch and releases control frames.
func (l *link) finish(batch []*writeReq, self *writeReq, err error) {
	for _, r := range batch {
		switch {
		case r == self:
			r.err = err
		case r.wait:
			r.err = err
			r.done <- struct{}{}
		default:
			putWriteReq(r)
		}
	}
}

// writeBatch writes every frame of batch with one writev on TCP, or gathered
// into one buffer and one Write elsewhere (TLS, proxies), since net.Buffers
// degrades to a Write per slice there.
func (l *link) writeBatch(batch []*writeReq) error {
	var msgs, bytes uint64
	for _, r := range batch {
		msgs += r.msgs
		bytes += uint64(len(r.data)) * r.msgs
	}
	var err error
	if l.tcp != nil {
		bufs := l.wbufs[:0]
		for _, r := range batch {
			bufs = append(bufs, r.hdr)
			if len(r.data) > 0 {
				bufs = append(bufs, r.data)
			}
		}
		l.wv = bufs
		_, err = l.wv.WriteTo(l.tcp)
		clear(bufs) // do not pin callers' payloads
		l.wbufs = bufs[:0]
	} else {
		g := getGather()
		for _, r := range batch {
			g.B = append(g.B, r.hdr...)
			g.B = append(g.B, r.data...)
		}
		_, err = l.conn.Write(g.B)
		putGather(g)
	}
	if err == nil {
		l.counters.messagesOut.Add(msgs)
		l.counters.bytesOut.Add(bytes)
	}
	return err
}

// ---- receiving: the read loop ----

func (l *link) readLoop() {
	err := l.readFrames()
	if err != nil && !errors.Is(err, ErrProtocol) && !errors.Is(err, ErrHandshake) && !errors.Is(err, ErrKeepAliveTimeout) {
		if l.failed() {
			return
		}
		err = fmt.Errorf("%w: %w", ErrLinkLost, err)
	}
	l.fail(err)
}

func protocolErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrProtocol}, args...)...)
}

// truncated turns a mid-frame EOF into a clear error.
func truncated(err error, what string) error {
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("connection ended inside %s: %w", what, io.ErrUnexpectedEOF)
	}
	return err
}

func (l *link) readFrames() error {
	if err := l.readHello(); err != nil {
		return err
	}
	br := l.br
	for {
		b0, err := br.ReadByte()
		if err != nil {
			return err // EOF here is a clean close between frames
		}
		l.framesIn.Add(1)
		if b0 == controlMarker {
			if err := l.readControl(); err != nil {
				return err
			}
			continue
		}
		if err := l.readData(int(b0)); err != nil {
			return err
		}
	}
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
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return fmt.Errorf("%w: no hello from peer within %v", ErrHandshake, l.cfg.HandshakeTimeout)
		}
		return fmt.Errorf("%w: %w", ErrHandshake, truncated(err, "the hello"))
	}
	h, err := parseHelloBody(b[2:])
	if err != nil {
		return err
	}
	l.br.Discard(len(b))
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

func (l *link) readData(idLen int) error {
	hdr, err := l.br.Peek(idLen + sizeOfLength)
	if err != nil {
		return truncated(err, "a data frame header")
	}
	n := loadU32(hdr[idLen:])
	if uint64(n) > uint64(l.cfg.MaxMessageSize) {
		return protocolErrorf("message of %d bytes exceeds the limit of %d", n, l.cfg.MaxMessageSize)
	}
	s, err := l.route(hdr[:idLen])
	if err != nil {
		return err
	}
	l.br.Discard(idLen + sizeOfLength)
	cost := int64(n) + messageOverhead
	if l.recvLinkCredit.Add(-cost)+cost <= 0 {
		return protocolErrorf("peer exceeded the link window of %d bytes", l.cfg.LinkWindow)
	}
	discard := s == nil || s.closeAcks.Load() > 0
	if !discard && s.recvCredit.Add(-cost)+cost <= 0 {
		return protocolErrorf("peer exceeded the window of %d bytes on %q", l.cfg.StreamWindow, s.id)
	}
	m, err := l.readPayload(int(n))
	if err != nil {
		return err
	}
	l.counters.messagesIn.Add(1)
	l.counters.bytesIn.Add(uint64(n))
	if discard {
		// A frame of an incarnation we already closed: drop it and give
		// the link credit back.
		m.release()
		l.consumedLink(cost)
		return nil
	}
	s.deliver(m)
	return nil
}

// readPayload reads n bytes: small ones into a pooled buffer, large ones
// into a slice that grows as bytes actually arrive, so a header that claims
// a huge message cannot make us allocate it up front.
func (l *link) readPayload(n int) (message, error) {
	if n <= pooledMessageLimit {
		b := getPayload(n)
		if _, err := io.ReadFull(l.br, b.B); err != nil {
			putPayload(b)
			return message{}, truncated(err, "a message payload")
		}
		return message{data: b.B, pooled: b}, nil
	}
	buf := make([]byte, min(n, maxUnbackedAlloc))
	got := 0
	for {
		k, err := io.ReadFull(l.br, buf[got:])
		got += k
		if err != nil {
			return message{}, truncated(err, "a message payload")
		}
		if got == n {
			return message{data: buf}, nil
		}
		grown := make([]byte, min(n, 4*got))
		copy(grown, buf[:got])
		buf = grown
	}
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
	typ, err := l.br.ReadByte()
	if err != nil {
		return truncated(err, "a control frame")
	}
	if int(typ) >= len(controlBodySize) || controlBodySize[typ] == 0 {
		return protocolErrorf("unknown control frame type 0x%02x", typ)
	}
	b, err := l.br.Peek(controlBodySize[typ])
	if err != nil {
		return truncated(err, frameName(typ))
	}
	switch typ {
	case frameHello:
		return protocolErrorf("second HELLO")
	case frameWindow, frameClose:
		idLen := int(b[0])
		if idLen > maxIDLen {
			return protocolErrorf("%s with ID length %d", frameName(typ), idLen)
		}
		if b, err = l.br.Peek(sizeOfIDLen + idLen + sizeOfLength); err != nil {
			return truncated(err, frameName(typ))
		}
		id, v := b[1:1+idLen], loadU32(b[1+idLen:])
		if typ == frameWindow {
			err = l.onWindow(id, v)
		} else {
			err = l.onCloseFrame(id, v)
		}
		l.br.Discard(len(b))
		return err
	case frameLinkWindow:
		v := loadU32(b)
		l.br.Discard(len(b))
		return l.addSendCredit(nil, v)
	case framePing:
		v := loadU32(b)
		l.br.Discard(len(b))
		if err := l.allowControl(); err != nil {
			return err
		}
		l.enqueueControl(appendValueControl(nil, framePong, v))
		return nil
	case framePong:
		l.br.Discard(len(b))
		return l.allowControl()
	case frameGoAway:
		code, rl := loadU32(b), int(b[4])
		if b, err = l.br.Peek(len(b) + rl); err != nil {
			return truncated(err, "GOAWAY")
		}
		reason := string(b[5:])
		l.br.Discard(len(b))
		if l.goingAway.Swap(true) {
			return l.allowControl()
		}
		l.log.Debug("tcpconn: peer is going away", "code", code, "reason", reason)
		return nil
	}
	return protocolErrorf("unhandled control frame type 0x%02x", typ)
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
func (l *link) consumedLink(cost int64) {
	if l.linkConsumed.Add(cost) >= int64(l.cfg.LinkWindow)/2 {
		if v := l.linkConsumed.Swap(0); v > 0 {
			l.recvLinkCredit.Add(v)
			l.enqueueControl(appendValueControl(nil, frameLinkWindow, uint32(v)))
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

// deliver queues m and wakes whoever waits for it.
func (s *stream) deliver(m message) {
	s.mu.Lock()
	s.queue = append(s.queue, m)
	s.wakeLocked()
	unclaimed := s.owner == nil
	s.mu.Unlock()
	if unclaimed {
		if ca := s.link.catchAll.Load(); ca != nil {
			ca.push(s)
		}
	}
}

func (s *stream) wakeLocked() {
	if s.waiting {
		s.waiting = false
		select {
		case s.notify <- struct{}{}:
		default:
		}
	}
}

// fail records why no more messages will arrive; queued ones stay readable.
func (s *stream) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.wakeLocked()
	s.mu.Unlock()
}

// popLocked takes the oldest queued message.
func (s *stream) popLocked() (message, bool) {
	if s.head == len(s.queue) {
		return message{}, false
	}
	m := s.queue[s.head]
	s.queue[s.head] = message{}
	s.head++
	if s.head == len(s.queue) {
		s.queue, s.head = s.queue[:0], 0
		if cap(s.queue) > 64 {
			s.queue = nil // do not keep a burst's worth of slots forever
		}
	}
	return m, true
}

// receive waits for the next message; cancel closes when the caller gives up.
func (s *stream) receive(cancel <-chan struct{}) (message, error) {
	for {
		s.mu.Lock()
		if m, ok := s.popLocked(); ok {
			s.mu.Unlock()
			s.consumed(m.cost())
			return m, nil
		}
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			return message{}, err
		}
		if s.notify == nil {
			s.notify = make(chan struct{}, 1)
		}
		s.waiting = true
		ch := s.notify
		s.mu.Unlock()
		select {
		case <-ch:
		case <-cancel:
			s.mu.Lock()
			s.waiting = false
			s.mu.Unlock()
			return message{}, errCanceled
		}
	}
}

// consumed returns credit for a message that left the queue.
func (s *stream) consumed(cost int64) {
	l := s.link
	if s.unacked.Add(cost) >= int64(l.cfg.StreamWindow)/2 && s.state.Load() == 0 {
		if v := s.unacked.Swap(0); v > 0 {
			s.recvCredit.Add(v)
			l.enqueueControl(appendIDControl(nil, frameWindow, s.id, uint32(v)))
		}
	}
	l.consumedLink(cost)
}

// drain releases every queued message (the owner is gone).
func (s *stream) drain() {
	s.mu.Lock()
	var total int64
	for {
		m, ok := s.popLocked()
		if !ok {
			break
		}
		total += m.cost()
		m.release()
	}
	s.mu.Unlock()
	if total > 0 {
		s.link.consumedLink(total)
	}
}

// ---- catch-all ----

// catchAll is the empty-ID connection of a link: it receives messages of
// every record no one has claimed, oldest ready record first.
type catchAll struct {
	mu      sync.Mutex
	ready   []*stream
	notify  chan struct{}
	waiting bool
	err     error
}

func (ca *catchAll) push(s *stream) {
	ca.mu.Lock()
	if !s.inReady {
		s.inReady = true
		ca.ready = append(ca.ready, s)
	}
	if ca.waiting {
		ca.waiting = false
		select {
		case ca.notify <- struct{}{}:
		default:
		}
	}
	ca.mu.Unlock()
}

func (ca *catchAll) fail(err error) {
	ca.mu.Lock()
	if ca.err == nil {
		ca.err = err
	}
	ca.waiting = false
	select {
	case ca.notify <- struct{}{}:
	default:
	}
	ca.mu.Unlock()
}

// receive returns the next unclaimed message and the record it came from.
func (ca *catchAll) receive(cancel <-chan struct{}) (*stream, message, error) {
	for {
		ca.mu.Lock()
		for len(ca.ready) > 0 {
			s := ca.ready[0]
			ca.ready[0] = nil
			ca.ready = ca.ready[1:]
			s.inReady = false
			s.mu.Lock()
			if s.owner != nil {
				s.mu.Unlock()
				continue
			}
			m, ok := s.popLocked()
			more := s.head < len(s.queue)
			s.mu.Unlock()
			if !ok {
				continue
			}
			if more {
				s.inReady = true
				ca.ready = append(ca.ready, s)
			}
			ca.mu.Unlock()
			s.consumed(m.cost())
			return s, m, nil
		}
		if len(ca.ready) == 0 && cap(ca.ready) > 64 {
			ca.ready = nil
		}
		if ca.err != nil {
			err := ca.err
			ca.mu.Unlock()
			return nil, message{}, err
		}
		ca.waiting = true
		ch := ca.notify
		ca.mu.Unlock()
		select {
		case <-ch:
		case <-cancel:
			ca.mu.Lock()
			ca.waiting = false
			ca.mu.Unlock()
			return nil, message{}, errCanceled
		}
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
		has := s.owner == nil && s.head < len(s.queue)
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
