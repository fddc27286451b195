// SPDX-License-Identifier: MIT

package tcpconn

import (
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"
)

// A record is one incarnation of an ID on one link. Its life:
//
//	open      in the route table; owned by a Connection, or unclaimed (the
//	          peer opened it: a catch-all or Listener.Accept may take it,
//	          else it expires after the idle timeout)
//	closing   we sent CLOSE (streamLocalClosed) and wait for the peer's
//	          reply; data frames and WINDOWs for the ID belong to this
//	          incarnation and are dropped. A new incarnation may already
//	          have replaced it in the route table (register): it shares the
//	          count of CLOSE replies still owed (acks), and takes the ID's
//	          frames only once they have all arrived.
//	retired   out of the route table: the peer's reply to our CLOSE came
//	          (closing -> retired), or the peer closed it and we replied
//	          (open -> retired, streamPeerClosed); queued messages stay
//	          readable, then the owner sees why.
//
// Crossing CLOSEs answer each other. The functions below are the only ones
// that move a record between these states.
const (
	streamLocalClosed = 1 << iota // we sent CLOSE for this incarnation
	streamPeerClosed              // the peer closed this incarnation
	// streamFinished: we sent CLOSE(id, finished) and send nothing more on
	// this incarnation; the peer may, until it closes it (drain.go).
	streamFinished
	streamClosed = streamLocalClosed | streamPeerClosed
)

// stream is one logical connection's record on one link: its receive queue
// and both directions of its credit.
type stream struct {
	inbox
	id      string
	queue   fifo[message] // guarded by mu
	owner   *Connection   // nil while unclaimed; guarded by mu
	inReady bool          // in the catch-all's ready line; guarded by mu

	state      atomic.Uint32
	retired    atomic.Bool   // no longer the route table's record for id
	acks       *atomic.Int32 // CLOSE replies the peer still owes for this ID (shared by its incarnations)
	peerOpened atomic.Bool   // the peer sent OPEN for this incarnation
	// peerFinished: the peer sent CLOSE(id, finished). Its reader sees the
	// end, but this side may still send: a Send waiting for credit goes on
	// waiting (the peer reads on until this side closes).
	peerFinished atomic.Bool
	// held: bytes of messages queued here whose link credit went back
	// when they were queued, reserved from the Budget until consumed
	// (holdQueued).
	held    atomic.Int64
	inflow  inflow  // what the peer may send on this ID
	outflow outflow // what this side has sent of the peer's window for it; guarded by link.wq.mu
	inParts bool    // a message in parts or on the lane is being queued; guarded by link.wq.mu
	// fresh: its owner's last receive call was a Receive, which hands the
	// caller a new slice: a small message queued here is read into one of
	// its size (payloadFor), and handed over as it is.
	fresh atomic.Bool
	order laneOrder   // messages held behind one on the bulk lane; guarded by mu
	loan  *bufferLoan // a receiver's buffer lent to the lane (laneloan.go); guarded by mu
	// landing: a parked receiver's buffer, offered to the socket's reader
	// (landing.go); guarded by mu.
	landing *landing
}

// message is one received payload; pooled is non-nil when data aliases a
// small pooled buffer (bufpool.go).
type message struct {
	data   []byte
	pooled *byteBuffer
}

func (m message) cost() int64 { return int64(len(m.data)) + messageOverhead }

func (m message) release() { putPayload(m.data, m.pooled) }

func bytesToString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// newStream returns a record for id; acks is its predecessor's counter of
// owed CLOSE replies, or nil for a fresh ID.
func (l *link) newStream(id string, owner *Connection, acks *atomic.Int32) *stream {
	if acks == nil {
		acks = new(atomic.Int32)
	}
	s := &stream{id: id, inbox: inbox{link: l}, owner: owner, acks: acks}
	s.inflow.init(int64(l.cfg.StreamWindow), nanotime())
	return s
}

// closing reports whether CLOSE replies are still owed for s's ID: frames
// for the ID belong to an incarnation we closed.
func (s *stream) closing() bool { return s.acks.Load() > 0 }

// register claims id for owner on this link, taking over a record the peer
// opened first (the registration race keeps what already arrived). fresh
// reports a new incarnation, which the caller announces with OPEN.
func (l *link) register(id string, owner *Connection) (s *stream, fresh bool, err error) {
	for {
		if l.failed() {
			return nil, false, l.err
		}
		s, ok := l.routes.load(id)
		if !ok {
			if !l.routes.reserve(l.localStreamLimit()) {
				return nil, false, fmt.Errorf("%w: %d logical connections on this link", ErrTooManyStreams, l.routes.n.Load())
			}
			s := l.newStream(id, owner, nil)
			if _, loaded := l.routes.byID.LoadOrStore(id, s); loaded {
				l.routes.unreserve()
				continue
			}
			if l.failed() { // fail may have swept routes before the store
				s.fail(l.err)
			}
			return s, true, nil
		}
		if s.state.Load()&streamLocalClosed != 0 || s.closing() {
			// A previous incarnation is still closing: a new one takes its
			// place (and its count in routes.n) and waits out its replies.
			ns := l.newStream(id, owner, s.acks)
			if l.routes.byID.CompareAndSwap(id, s, ns) {
				s.retired.Store(true)
				return ns, true, nil
			}
			continue
		}
		s.mu.Lock()
		if s.owner != nil {
			s.mu.Unlock()
			return nil, false, fmt.Errorf("%w: %q", ErrIDInUse, id)
		}
		s.owner = owner
		s.mu.Unlock()
		l.routes.claimed(s)
		return s, false, nil
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
	for {
		if s, ok := l.routes.load(id); ok {
			return s, nil
		}
		if !l.routes.reserve(l.localStreamLimit()) {
			return nil, fmt.Errorf("%w: %d logical connections on this link", ErrTooManyStreams, l.routes.n.Load())
		}
		s := l.newStream(id, nil, nil)
		if _, loaded := l.routes.byID.LoadOrStore(id, s); !loaded {
			return s, nil
		}
		l.routes.unreserve()
	}
}

// closeStream is the local side ending s (open -> closing): CLOSE goes to
// the peer, whose reply retires the record.
func (l *link) closeStream(s *stream, code closeCode) {
	for {
		st := s.state.Load()
		if st&streamLocalClosed != 0 {
			return
		}
		if s.state.CompareAndSwap(st, st|streamLocalClosed) {
			break
		}
	}
	s.mu.Lock()
	s.endAwaitLocked() // no receiver of s will lend its buffer now
	s.mu.Unlock()
	if s.state.Load()&streamPeerClosed != 0 {
		l.routes.remove(s) // the peer closed first and we already replied
		return
	}
	s.acks.Add(1)
	l.enqueueControl(appendIDControl(nil, frameClose, s.id, uint32(code)))
}

// onPeerClose handles the peer's CLOSE for id: the reply to one of ours
// (closing -> retired once no more are owed), or the peer ending the
// current incarnation (open -> retired, answered with CLOSE).
func (l *link) onPeerClose(s *stream, code closeCode) error {
	if code == closeFinished {
		// The peer sends nothing more here; this side's reader sees the
		// end after what is queued (and what is still on the bulk lane),
		// and may still send until it closes. (Crossing our CLOSE, it is
		// no reply: the peer answers that.)
		if !s.closing() {
			s.peerFinished.Store(true) // before fail: a Send it wakes must know
			s.mu.Lock()
			held := s.deferCloseLocked(ErrPeerClosed)
			s.mu.Unlock()
			if !held {
				s.fail(ErrPeerClosed)
			}
		}
		return nil
	}
	if s.closing() {
		if s.acks.Add(-1) == 0 && s.state.Load()&streamLocalClosed != 0 {
			l.routes.remove(s)
		}
		return nil
	}
	err := ErrPeerClosed
	if code == closeRefused {
		err = ErrRefused
	}
	s.mu.Lock()
	held := s.deferCloseLocked(err) // its last messages are still on the bulk lane
	unclaimed := s.owner == nil
	s.mu.Unlock()
	if !held {
		s.fail(err) // before the state bit: a sender that sees the bit finds the error
	}
	s.state.Or(streamPeerClosed)
	if s.peerFinished.Load() {
		// A Send waiting for credit ignored the finish's error (fail
		// above woke it with that): wake it again to see the state bit.
		l.wakeCreditWaiters()
	}
	l.enqueueControl(appendIDControl(nil, frameClose, s.id, uint32(closeNormal)))
	l.routes.remove(s)
	if !held {
		l.drainIfNobodyCan(s)
	}
	if unclaimed {
		return l.allowControl() // open-then-reset churn is charged
	}
	return nil
}

// endByPeer ends s as the peer's CLOSE, held behind messages on the bulk
// lane, said once they are queued.
func (l *link) endByPeer(s *stream, err error) {
	s.fail(err)
	l.drainIfNobodyCan(s)
}

// drainIfNobodyCan releases the messages of a record the peer closed that
// no Connection owns and no catch-all will read: out of the route table,
// nobody can claim it now.
func (l *link) drainIfNobodyCan(s *stream) {
	if s.ownerIs(nil) && l.routes.catchAll.Load() == nil {
		s.drain()
	}
}

// route finds the record for a data frame's ID, opening one for an ID the
// peer has not used before.
func (l *link) route(idb []byte) (*stream, error) {
	if s := l.routes.lastHit; s != nil && !s.retired.Load() && s.id == string(idb) {
		return s, nil
	}
	if s, ok := l.routes.load(bytesToString(idb)); ok {
		l.routes.lastHit = s
		return s, nil
	}
	s, err := l.peerOpen(string(idb))
	if s != nil {
		l.routes.lastHit = s
	}
	return s, err
}

// peerOpen creates the record of an ID the peer opens (OPEN or its first
// data frame): offered to the Listener, left for the catch-all, or kept
// unclaimed until a Wrap claims it or it expires. Beyond MaxStreams it is
// refused; a peer that keeps opening IDs regardless is cut off.
func (l *link) peerOpen(id string) (*stream, error) {
	n := l.routes.n.Add(1)
	if n > int64(l.cfg.MaxStreams) {
		if n > int64(l.cfg.MaxStreams)+int64(l.cfg.MaxStreams)/4 {
			l.routes.unreserve()
			return nil, protocolErrorf("OPEN or data", id, "peer opened more than %d logical connections", n-1)
		}
	}
	s := l.newStream(id, nil, nil)
	if v, loaded := l.routes.byID.LoadOrStore(id, s); loaded {
		l.routes.unreserve() // a local registration got there first
		return v.(*stream), nil
	}
	switch {
	case n > int64(l.cfg.MaxStreams):
		// Refused: frames are dropped until the peer acknowledges.
		l.closeStream(s, closeRefused)
	case l.routes.accept != nil:
		if !l.routes.accept(s) {
			l.closeStream(s, closeRefused)
		}
	case l.routes.catchAll.Load() == nil:
		// Nobody serves unclaimed IDs yet: expire it if never claimed.
		l.routes.addUnclaimed(s, time.Now().UnixNano())
	}
	return s, nil
}

// expireUnclaimed retires peer-opened records nobody claimed within the idle
// timeout, telling the peer with CLOSE so nothing vanishes silently.
func (l *link) expireUnclaimed(now time.Time) {
	if l.cfg.IdleTimeout <= 0 {
		return
	}
	for _, s := range l.routes.takeExpired(now.Add(-l.cfg.IdleTimeout).UnixNano()) {
		s.mu.Lock()
		claimed := s.owner != nil
		s.mu.Unlock()
		if !claimed && l.routes.catchAll.Load() == nil {
			s.fail(ErrIdleTimeout)
			l.closeStream(s, closeNormal)
			s.drain()
		}
	}
}

// drainUnowned releases the messages of records no Connection owns, once
// the link failed and no catch-all is left to read them: nobody ever will.
func (l *link) drainUnowned() {
	l.routes.each(func(s *stream) bool {
		if s.ownerIs(nil) {
			s.drain()
		}
		return true
	})
}

// deliver queues m and wakes whoever waits for it; it reports whether it
// woke a receiver.
func (s *stream) deliver(m message) bool {
	s.mu.Lock()
	if s.holdLocked(m) {
		s.mu.Unlock()
		return false
	}
	return s.queueLocked(m)
}

// queueLocked is deliver once m's turn has come; the caller holds s.mu,
// which it releases.
func (s *stream) queueLocked(m message) bool {
	if s.state.Load()&streamLocalClosed != 0 {
		// Admitted before we closed s, complete after its queue was
		// drained (a long message in parts): nobody will take it.
		s.mu.Unlock()
		s.link.drop(m, m.cost())
		return false
	}
	s.queue.push(m)
	unclaimed := s.owner == nil
	held := s.link.holdQueued(m.cost(), !unclaimed || s.link.routes.catchAll.Load() != nil)
	if held {
		s.held.Add(m.cost())
	}
	woke := s.wakeLocked()
	s.mu.Unlock()
	if held {
		s.link.consumedLink(m.cost(), s.link.readerControl())
	}
	if unclaimed {
		if ca := s.link.routes.catchAll.Load(); ca != nil {
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

// consumed returns credit for a message that left the queue.
func (s *stream) consumed(m message) {
	s.returnCredit(m.cost(), controlLazy)
	s.releaseLink(m.cost(), controlLazy)
}

// releaseLink ends the link's hold on n bytes of s's messages: what was
// held from the Budget goes back to it (its link credit went back when
// the message was queued), the rest goes back to the peer as link credit.
// Counting in bytes rather than per message keeps message small; the
// totals agree because held never exceeds the bytes not yet released.
func (s *stream) releaseLink(n int64, how controlMode) {
	var fromBudget int64
	for {
		h := s.held.Load()
		take := min(h, n)
		if take == 0 {
			break
		}
		if s.held.CompareAndSwap(h, h-take) {
			fromBudget = take
			s.link.inflow.unhold(take)
			break
		}
	}
	if n > fromBudget {
		s.link.consumedLink(n-fromBudget, how)
	}
}

// returnCredit gives n bytes of stream credit back to the peer, with a
// WINDOW once half the window is owed (so a sender waiting for credit with
// nothing in flight always gets it: README, "Flow control"); the window
// grows with the reader's pace (recvWindow).
func (s *stream) returnCredit(n int64, how controlMode) {
	l := s.link
	if s.state.Load()&streamClosed != 0 {
		return // a finished record still reads: its credit goes on
	}
	if v := s.inflow.window.consumed(n, l.tuning(int64(l.cfg.MaxStreamWindow), nil), false); v > 0 {
		s.inflow.grant(v)
		var fb [maxControlFrame]byte
		l.queueControl(appendIDControl(fb[:0], frameWindow, s.id, uint32(v)), how)
	}
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
		s.releaseLink(total, controlAsync) // never a write on the caller's goroutine: it may hold Connection.mu
	}
}

func (s *stream) ownerIs(c *Connection) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.owner == c
}

// sendError is why nothing more can be sent on s (it is closing or closed).
func (s *stream) sendError() error {
	if s.state.Load()&streamFinished != 0 {
		return errMoved
	}
	if err := s.error(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.order.closeErr; err != nil {
		return err // the peer's CLOSE, held behind messages on the lane
	}
	return ErrClosed
}
