// SPDX-License-Identifier: MIT

package tcpconn

import (
	"errors"
	"fmt"
	"github.com/google/uuid"
	"io"
	"sync/atomic"
	"time"
)

// readFailure classifies why reading stopped.
func readFailure(err error) error {
	if errors.Is(err, ErrProtocol) || errors.Is(err, ErrHandshake) || errors.Is(err, ErrKeepAliveTimeout) || errors.Is(err, ErrClosed) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrLinkLost, err)
}

// ProtocolError is the peer breaking the wire protocol or a limit: which
// frame, which logical connection (if the frame named one), and why. The
// link it arrived on is closed. It matches ErrProtocol with errors.Is, and
// errors.As gives the fields, so metrics can classify causes.
type ProtocolError struct {
	Frame  string // "data", or a control frame's name ("WINDOW", ...)
	ID     string // the logical connection's ID, if the frame named one
	Reason string
}

func (e *ProtocolError) Error() string { return ErrProtocol.Error() + ": " + e.Reason }

// Unwrap returns ErrProtocol.
func (e *ProtocolError) Unwrap() error { return ErrProtocol }

func protocolErrorf(frame, id, format string, args ...any) error {
	return &ProtocolError{Frame: frame, ID: id, Reason: fmt.Sprintf(format, args...)}
}

// truncated turns an EOF inside a frame into an error that names the
// frame: the socket ended (ErrLinkLost, as any close, so code that handles
// a lost socket sees every cut as one) and its peer broke the framing (a
// *ProtocolError). It is the same wherever the cut fell: in a header, or
// in a payload after some of its bytes (io.ErrUnexpectedEOF) or none.
func truncated(err error, what string) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: %w: %w", ErrLinkLost, protocolErrorf(what, "", "connection ended inside %s", what), io.ErrUnexpectedEOF)
	}
	return err
}

// peekHeader parses the next frame's header, consuming nothing; once its
// first byte is in it counts the frame in heard (keepalive), if given.
// Headers are parsed with Peek, so a read interrupted by a deadline loses
// nothing.
func peekHeader(br *frameReader, heard *atomic.Uint64) (frameHeader, error) {
	b, err := br.Peek(1)
	if err != nil {
		return frameHeader{}, err // EOF here is a clean close between frames
	}
	if heard != nil {
		heard.Add(1)
	}
	for {
		h, need, err := parseHeader(b)
		if err != nil || need == 0 {
			return h, err
		}
		more, err := br.Peek(need)
		if err != nil {
			return h, truncated(err, headerName(b))
		}
		b = more
	}
}

// readFrame reads one frame (or resumes one) and reports whether it woke a
// waiting receiver. Headers are parsed with Peek and consumed only when
// complete, so a read interrupted by a deadline loses nothing.
func (l *link) readFrame() (bool, error) {
	if l.reading.pend.active {
		return l.readPending()
	}
	h, err := peekHeader(l.reading.br, &l.keepAlive.heard)
	switch {
	case err != nil:
		return false, err
	case h.kind == kindData:
		return l.readData(h)
	case h.kind == kindPart:
		return l.readPart(h)
	default:
		err := controlFrames[h.typ].handle(l, h.body)
		l.reading.br.Discard(h.size)
		return false, err
	}
}

func (l *link) readHello() error {
	if d := l.cfg.HandshakeTimeout; d > 0 {
		l.conn.SetReadDeadline(time.Now().Add(d))
	}
	b, err := l.reading.br.Peek(2)
	if err == nil && !l.client && b[0] == controlMarker && b[1] == frameLane {
		return l.acceptLane()
	}
	if err == nil && (b[0] != controlMarker || b[1] != frameHello) {
		return fmt.Errorf("%w: first frame is not a tcpconn hello (first bytes % x): peer is not a tcpconn v%d endpoint", ErrHandshake, b, protocolVersion)
	}
	if err == nil {
		b, err = l.reading.br.Peek(2 + sizeOfHelloBody)
	}
	if err != nil {
		if isTimeout(err) {
			// The read's own error stays in the chain: a net.Error with
			// Timeout() true, as yamux and smux users asked for.
			return fmt.Errorf("%w: no hello from peer within %v: %w", ErrHandshake, l.cfg.HandshakeTimeout, err)
		}
		return fmt.Errorf("%w: %w", ErrHandshake, truncated(err, "the hello"))
	}
	h, err := parseHelloBody(b[2:])
	if err != nil {
		return err
	}
	l.reading.br.Discard(len(b))
	l.keepAlive.heard.Add(1)
	l.conn.SetReadDeadline(time.Time{})
	if !l.client {
		l.setID(uuid.UUID(h.linkID)) // the dialling side names the link
		if !l.cfg.DisableLanes {
			laneTargets.add(uuid.UUID(h.linkID), l)
		}
	}
	l.wq.mu.Lock()
	l.peer = h // the windows and message limit senders use from now on
	l.wq.wakeCreditLocked()
	l.wq.mu.Unlock()
	close(l.helloDone)
	l.ping() // a first round trip for window tuning
	return nil
}

func (l *link) readData(h frameHeader) (bool, error) {
	idb, n := h.id, h.length
	if uint64(n) > uint64(l.cfg.MaxMessageSize) {
		return false, protocolErrorf("data", string(idb), "message of %d bytes exceeds the limit of %d", n, l.cfg.MaxMessageSize)
	}
	if len(l.reading.partials) > 0 && l.reading.partials[bytesToString(idb)] != nil {
		return false, protocolErrorf("data", string(idb), "data frame on %q inside a message in parts", idb)
	}
	s, err := l.route(idb)
	if err != nil {
		return false, err
	}
	cost := int64(n) + messageOverhead
	if s, err = l.admit("data", s, cost); err != nil {
		return false, err
	}
	l.reading.br.Discard(h.size)
	m, inPlace := l.inPlaceFor(s, int(n))
	if !inPlace {
		if s != nil && l.land(s, int(n)) {
			l.countIn(int(n))
			return true, nil
		}
		m = payloadFor(s, int(n))
	}
	l.reading.pend = pendingData{active: true, inPlace: inPlace, s: s, end: int(n), total: int(n), cost: cost, m: m}
	return l.readPending()
}

// admit charges a whole message (a data frame) against the link's and s's
// credit. It returns nil for a message of an incarnation we already closed:
// read and dropped.
func (l *link) admit(frame string, s *stream, cost int64) (*stream, error) {
	if err := l.chargeLink(frame, s, cost); err != nil {
		return nil, err
	}
	if s.closing() {
		return nil, nil
	}
	return s, s.charge(frame, cost)
}

// chargeLink takes cost from the link's credit, which must have been
// positive. A charge that spends it returns what is owed (consumedLink):
// the frame may be for an ID nobody reads, and no consumption may follow.
func (l *link) chargeLink(frame string, s *stream, cost int64) error {
	ok, spent := l.inflow.charge(cost)
	if !ok {
		return protocolErrorf(frame, s.id, "peer exceeded the link window of %d bytes", l.inflow.window.size.Load())
	}
	if spent {
		l.consumedLink(0, controlAsync)
	}
	return nil
}

// charge takes cost from s's credit, which must have been positive.
func (s *stream) charge(frame string, cost int64) error {
	if ok, _ := s.inflow.charge(cost); !ok {
		return protocolErrorf(frame, s.id, "peer exceeded the window of %d bytes on %q", s.inflow.window.size.Load(), s.id)
	}
	return nil
}

// payloadFor returns the buffer a data frame of n bytes for s is read into
// when its receiver does not read it in place: a new slice of its size
// for a receiver that calls Receive (stream.fresh), which takes it without
// a copy; else one of ours.
func payloadFor(s *stream, n int) message {
	if s != nil && n <= smallMessageLimit && s.fresh.Load() {
		return message{data: make([]byte, n)}
	}
	return newPayload(n)
}

// newPayload returns the buffer a message of n bytes is read into: a
// pooled one; when none is large enough, a slice that grows with the bytes
// that actually arrive, so a header claiming a huge message cannot make us
// allocate it up front.
func newPayload(n int) message {
	var m message
	m.data, m.pooled = getPayload(n)
	return m
}

// grownPayload returns m with room past its got bytes, grown with the
// bytes that arrive: doubled, or to the end of this frame's payload if
// more (at most maxUnbackedAlloc ahead of them), never past total.
func grownPayload(m message, got, end, total int) message {
	grown := make([]byte, min(total, max(2*got, min(end, got+maxUnbackedAlloc))))
	copy(grown, m.data[:got])
	m.release()
	return message{data: grown}
}

// readPart reads a PART: a piece of a message too large for one frame,
// which the sender interleaves with other IDs' frames. The first PART of a
// message admits it whole (its size is this piece plus rest); later ones
// must continue it exactly.
func (l *link) readPart(h frameHeader) (bool, error) {
	idb, rest, n := h.id, uint64(h.rest), uint64(h.length)
	p := l.reading.partials[bytesToString(idb)]
	if p == nil {
		total := n + rest
		if total > uint64(l.cfg.MaxMessageSize) {
			return false, protocolErrorf("PART", string(idb), "message of %d bytes exceeds the limit of %d", total, l.cfg.MaxMessageSize)
		}
		s, err := l.route(idb)
		if err != nil {
			return false, err
		}
		p = &partial{id: s.id, total: int(total), cost: int64(total) + messageOverhead}
		if l.client && total >= uint64(l.cfg.LaneThreshold) {
			l.wantLane() // the peer sends bulk beside small messages: a lane for the next ones
		}
		// The link is charged the whole message now, the stream part by
		// part (below) and the whole message once complete (readPending).
		if err := l.chargeLink("PART", s, p.cost); err != nil {
			return false, err
		}
		if l.inflow.credit.Load() <= 0 {
			l.growForMessage(p.cost) // it overdrew the link
		}
		if !s.closing() {
			p.s = s
		}
		if p.m, p.inPlace = l.inPlaceFor(p.s, p.total); p.inPlace {
			l.reading.into.part = p // the caller's buffer is as large as it is
		} else {
			// Sized by what this part brings, not by the message it
			// claims: a first part of one byte must not buy a buffer for
			// megabytes.
			p.m = newPayload(int(min(n, uint64(p.total))))
		}
		if l.reading.partials == nil {
			l.reading.partials = make(map[string]*partial)
		}
		l.reading.partials[p.id] = p
	} else if n+rest != uint64(p.total-p.got) {
		return false, protocolErrorf("PART", p.id, "PART of %d bytes with %d to follow on %q, where %d bytes of the message are missing", n, rest, p.id, p.total-p.got)
	}
	if p.s != nil {
		if err := p.s.charge("PART", int64(n)); err != nil {
			return false, err
		}
	}
	l.reading.br.Discard(h.size)
	l.reading.pend = pendingData{active: true, inPlace: p.inPlace, s: p.s, part: p, got: p.got, end: p.got + int(n), total: p.total, cost: p.cost, m: p.m}
	return l.readPending()
}

func (l *link) readPending() (bool, error) {
	p := &l.reading.pend
	for p.got < p.end {
		if p.got == len(p.m.data) {
			p.m = grownPayload(p.m, p.got, p.end, p.total)
		}
		// The frame reader counts what its reads bring as the peer
		// being heard (keepalive) while a long payload arrives.
		k, err := l.reading.br.ReadFull(p.m.data[p.got:min(len(p.m.data), p.end)])
		p.got += k
		if err != nil {
			if isTimeout(err) || err == errWouldBlock {
				return false, err // resumable
			}
			if p.part != nil {
				p.part.m = p.m // the partial's buffer now; dropPartials releases it
			} else if !p.inPlace {
				p.m.release()
			}
			p.active = false
			return false, truncated(err, "a message payload")
		}
	}
	if pt := p.part; pt != nil {
		if s := pt.s; s != nil {
			// The part is off the socket: its stream credit goes back, so
			// a message larger than the window keeps moving while the
			// bytes in flight stay bounded by the window.
			s.returnCredit(int64(p.end-pt.got), l.readerControl())
		}
		if p.got < p.total { // more PARTs to come
			pt.m, pt.got = p.m, p.got
			*p = pendingData{}
			return false, nil
		}
		delete(l.reading.partials, pt.id)
		l.forgetPartial(pt)
		if s := pt.s; s != nil {
			s.inflow.credit.Add(-pt.cost) // now held whole, until consumed
		}
	}
	s, m, cost, inPlace := p.s, p.m, p.cost, p.inPlace
	*p = pendingData{}
	l.countIn(len(m.data))
	switch {
	case s == nil:
		l.drop(m, cost)
		return false, nil
	case inPlace:
		return l.deliverInPlace(s, m), nil
	}
	return s.deliver(m), nil
}

// countIn counts a message of n bytes read off the socket.
func (l *link) countIn(n int) {
	l.counters.messagesIn.Add(1)
	l.counters.bytesIn.Add(uint64(n))
	if n >= l.cfg.LaneThreshold {
		l.lanes.bulkIn.Add(1)
	}
}

// drop releases a message nobody will receive and returns its link credit.
func (l *link) drop(m message, cost int64) {
	m.release()
	l.consumedLink(cost, controlAsync)
}

// dropPartial discards the message in parts pending on id, if any (the
// peer closed the ID in the middle of it).
func (l *link) dropPartial(id string) {
	if p := l.reading.partials[id]; p != nil {
		delete(l.reading.partials, id)
		if p.inPlace { // the receiver's buffer: not ours to release
			p.m = message{}
		}
		l.forgetPartial(p)
		l.drop(p.m, p.cost)
	}
}

// forgetPartial ends p's hold on the receiver's buffer, if it had one:
// the message is complete or dropped.
func (l *link) forgetPartial(p *partial) {
	if l.reading.into.part == p {
		l.reading.into.part = nil
	}
	p.inPlace = false
}

// allowControl charges one frame against the control-frame rate limit.
func (l *link) allowControl() error {
	if !l.reading.limiter.allow(time.Now(), l.cfg.MaxControlFramesPerSecond) {
		return protocolErrorf("control", "", "control frame flood (more than %d per second)", l.cfg.MaxControlFramesPerSecond)
	}
	return nil
}

// controlFrame describes one control frame type: its name, the fixed part
// of its body (after the type byte), what follows it, and its handler,
// which gets the whole body. readControl dispatches through controlFrames,
// indexed by type; a type without an entry is a protocol error.
type controlFrame struct {
	name  string
	fixed int      // body bytes before any variable part
	tail  tailKind // the variable part, whose length byte ends the fixed part
	// handle acts on the body; an error fails the link.
	handle func(l *link, body []byte) error
}

type tailKind uint8

const (
	tailNone   tailKind = iota
	tailID              // id (at most maxIDLen bytes), then a u32
	tailReason          // a reason of up to 255 bytes
)

var controlFrames = [frameTypeLimit]controlFrame{
	frameHello:      {"HELLO", sizeOfHelloBody, tailNone, (*link).onSecondHello},
	frameWindow:     {"WINDOW", sizeOfIDLen, tailID, (*link).onWindow},
	frameLinkWindow: {"LINK_WINDOW", sizeOfLength, tailNone, (*link).onLinkWindow},
	frameClose:      {"CLOSE", sizeOfIDLen, tailID, (*link).onCloseFrame},
	framePing:       {"PING", sizeOfLength, tailNone, (*link).onPing},
	framePong:       {"PONG", sizeOfLength, tailNone, (*link).onPong},
	frameGoAway:     {"GOAWAY", sizeOfLength + sizeOfIDLen, tailReason, (*link).onGoAway},
	frameOpen:       {"OPEN", sizeOfIDLen, tailID, (*link).onOpen},
	// PART carries a payload like a data frame: readFrame hands it to
	// readPart before this table is consulted.
	framePart: {name: "PART"},
	frameLane: {"LANE", sizeOfLaneBody, tailNone, (*link).onStrayLane},
	frameBulk: {"BULK", sizeOfIDLen, tailID, (*link).onBulk},
}

func frameName(typ byte) string {
	if int(typ) < len(controlFrames) && controlFrames[typ].name != "" {
		return controlFrames[typ].name
	}
	return fmt.Sprintf("unknown(0x%02x)", typ)
}

// splitIDBody splits a tailID body into its ID and its u32.
func splitIDBody(body []byte) ([]byte, uint32) {
	return body[sizeOfIDLen : len(body)-sizeOfLength], loadU32(body[len(body)-sizeOfLength:])
}

func (l *link) onSecondHello([]byte) error { return protocolErrorf("HELLO", "", "second HELLO") }

func (l *link) onPing(body []byte) error {
	if err := l.allowControl(); err != nil {
		return err
	}
	var fb [sizeOfIDLen + sizeOfType + sizeOfLength]byte
	l.enqueueControl(appendValueControl(fb[:0], framePong, loadU32(body)))
	return nil
}

func (l *link) onPong(body []byte) error {
	l.keepAlive.pong(loadU32(body), nanotime())
	return l.allowControl()
}

func (l *link) onGoAway(body []byte) error {
	// Under wq.mu: an OPEN queued from now on is refused (enqueueOpen),
	// so every OPEN this side sends goes before its answer to a PING
	// that follows the GOAWAY.
	l.wq.mu.Lock()
	repeated := l.goingAway.Swap(true)
	l.wq.mu.Unlock()
	if repeated {
		return l.allowControl()
	}
	code := goAwayCode(loadU32(body))
	l.logger().Debug("tcpconn: peer is going away", "code", code, "reason", string(body[sizeOfLength+sizeOfIDLen:]))
	if l.goAwayHook != nil {
		go l.goAwayHook(l, code) // the token holder must not wait for its owner
	}
	return nil
}

// onOpen: the peer announces a new incarnation of an ID (so that a server
// can Accept or push to a client that has not sent anything yet).
func (l *link) onOpen(body []byte) error {
	idb, _ := splitIDBody(body)
	if s, ok := l.routes.load(bytesToString(idb)); ok {
		// Both sides opened the ID at once (fine, once), or a repeat.
		if !s.closing() && s.peerOpened.Swap(true) {
			return l.allowControl()
		}
		return nil
	}
	s, err := l.peerOpen(string(idb))
	if s != nil {
		s.peerOpened.Store(true)
	}
	return err
}

func (l *link) onCloseFrame(body []byte) error {
	idb, code := splitIDBody(body)
	if len(l.reading.partials) > 0 {
		l.dropPartial(string(idb))
	}
	s, ok := l.routes.load(bytesToString(idb))
	if !ok {
		return l.allowControl() // nothing to close: charged like a ping
	}
	return l.onPeerClose(s, closeCode(code))
}

func (l *link) onWindow(body []byte) error {
	idb, inc := splitIDBody(body)
	s, ok := l.routes.load(bytesToString(idb))
	if !ok {
		// Credit for a record already retired; harmless but charged so a
		// peer cannot make us spin on it.
		return l.allowControl()
	}
	if s.closing() {
		// Sent before the peer's reply to our CLOSE: credit of the
		// incarnation we closed, not of the one that may have replaced it.
		return nil
	}
	return l.addSendCredit(s, inc)
}

func (l *link) onLinkWindow(body []byte) error { return l.addSendCredit(nil, loadU32(body)) }

// addSendCredit applies a WINDOW (s != nil) or LINK_WINDOW. Credit beyond the
// announced window can only come from a broken or hostile peer.
func (l *link) addSendCredit(s *stream, inc uint32) error {
	if inc == 0 {
		return l.allowControl()
	}
	l.wq.mu.Lock()
	defer l.wq.mu.Unlock()
	// Credit is the announced window minus sendSpent; WINDOWs may grow it
	// (auto-tuning), up to maxWindow.
	if s == nil {
		if !l.outflow.give(inc, int64(l.peer.linkWindow)) {
			return protocolErrorf("LINK_WINDOW", "", "LINK_WINDOW overflows the largest window (%d bytes)", maxWindow)
		}
	} else if !s.outflow.give(inc, int64(l.peer.streamWindow)) {
		return protocolErrorf("WINDOW", s.id, "WINDOW on %q overflows the largest window (%d bytes)", s.id, maxWindow)
	}
	l.wq.wakeCreditLocked()
	if len(l.sched.bulk) > 0 {
		l.kickWriterLocked() // parts waiting for this credit
	}
	return nil
}

// growForMessage grows the link's window by the cost of a message in parts
// whose first PART overdrew it, with bytes reserved from the Budget, and
// returns that credit at once. The first PART charges the link the whole
// message: without the growth, every other ID would wait until the message
// had arrived and been read, and, if the credit were only lent per message,
// the next message of a bulk flow, charged when queued, would block them
// again until its own first PART had crossed the queue ahead of it. The
// window stays grown, so back-to-back large messages fit, up to
// MaxLinkWindow; it is given back when the budget is tight
// (recvWindow.tune) or the link closes.
func (l *link) growForMessage(cost int64) {
	w := &l.inflow.window
	for {
		size := w.size.Load()
		if size <= 0 || size+cost > int64(l.cfg.MaxLinkWindow) || !l.inflow.budget.reserve(cost) {
			return // released, at its largest, or no room: the link waits
		}
		if w.size.CompareAndSwap(size, size+cost) {
			break
		}
		l.inflow.budget.release(cost)
	}
	l.grantLink(cost, l.readerControl())
}

// readerControl is how the token holder queues a window update: a
// receiver reading for itself writes it with its next write, or before it
// waits again (flushLazy); the background reader has the writer send it.
func (l *link) readerControl() controlMode {
	if l.token.direct.Load() {
		return controlLazy
	}
	return controlAsync
}

// grantLink gives the peer v bytes of link credit with a LINK_WINDOW.
func (l *link) grantLink(v int64, how controlMode) {
	l.inflow.grant(v)
	var fb [sizeOfIDLen + sizeOfType + sizeOfLength]byte
	l.queueControl(appendValueControl(fb[:0], frameLinkWindow, uint32(v)), how)
}

// dropPartials discards every unfinished message in parts; the token
// holder calls it once the link failed, so that their buffers go back to
// the pools.
func (l *link) dropPartials() {
	for id := range l.reading.partials {
		l.dropPartial(id)
	}
}

// holdQueued decides whether a message of cost bytes, queued for a reader
// that has not taken it yet, gives its link credit back now rather than
// when it is consumed: it does while the Budget has room for it and the
// link holds less than MaxLinkWindow that way, or, for an ID with no
// reader (unclaimed, and no catch-all), less than LinkWindow. The link
// window then bounds the bytes in flight, not the bytes waiting for
// readers, so a logical connection whose reader is slow or absent never
// holds credit the others need; its own window still bounds what it
// holds, and the Budget what all of them hold. Unclaimed IDs get less
// because anyone can open them: a peer that floods them fills LinkWindow
// held plus LinkWindow of credit, then breaks the link window. When the
// Budget is spent, messages hold their link credit until consumed, and
// LinkWindow being at least twice StreamWindow keeps one ID from holding
// all of it.
func (l *link) holdQueued(cost int64, hasReader bool) bool {
	limit := int64(l.cfg.LinkWindow)
	if hasReader {
		limit = int64(l.cfg.MaxLinkWindow)
	}
	return l.inflow.hold(cost, limit)
}

// consumedLink returns link credit as messages leave the link: in
// returnStep pieces, and whatever is owed while the peer's credit is spent.
// Messages queued unread at the link's cost (an ID nobody reads, when the
// Budget has no room for them) may take up to half the window and never
// be consumed: waiting for returnStep would then stall every other ID of
// the link with less than returnStep owed. how is a control* constant: user goroutines may write
// inline or lazily.
func (l *link) consumedLink(cost int64, how controlMode) {
	starved := l.inflow.credit.Load() <= 0
	if v := l.inflow.window.consumed(cost, l.tuning(int64(l.cfg.MaxLinkWindow), l.inflow.budget), starved); v > 0 {
		l.grantLink(v, how)
	}
}
