// SPDX-License-Identifier: MIT

package tcpconn

import (
	"errors"
	"net"
	"os"
	"time"
)

// A receiver's buffer lent to the lane's reader. A ReceiveAppend (or
// NetConn Read) whose next message is on the bulk lane waits with the
// spare capacity of its buffer offered, and the lane's reader reads that
// message straight into it when it is the stream's next and fits.
// Without the loan a lane message is read into a buffer of ours and copied
// once more into the caller's: a pass over every bulk payload in user
// space, which is what a small message beside bulk ones waits behind on a
// busy machine (PERFORMANCE.md, "Small messages beside bulk ones").
//
// The buffer stays the caller's. The lane's reader writes to it only while
// the caller waits, and a caller that stops waiting (its message landed,
// Close, cancel, the link failed) takes it back before its call returns:
// the reader, interrupted by a read deadline if it is blocked, moves what
// arrived into a buffer of ours and goes on there. Nothing writes to the
// caller's memory after its call returned.

// bufferLoan is a stream's side of a loan, made at its first offer;
// guarded by stream.mu. One receiver at a time offers its buffer (others
// on the same stream wait as usual), and the message that lands in it is
// its own: land wakes it, not the oldest receiver.
type bufferLoan struct {
	owner   *waiter       // the receiver whose buffer it is; nil: no loan
	offered []byte        // its spare capacity, not taken yet
	lm      *laneMessage  // the message being read into the buffer
	conn    net.Conn      // the lane lm is read from: its deadline interrupts the reader
	filling net.Conn      // the lane whose reader reads the stream's next message into a buffer of ours; nil if none
	landed  message       // lm, arrived whole in the buffer, for the receiver
	taken   chan struct{} // closed once the reader let go of the buffer; nil if nobody asked
	lends   bool          // the last receiver to wait offered a buffer: the reader waits for the next offer (awaitOffer)
	wanted  chan struct{} // closed at the next offer; nil unless the reader waits for one
}

// errTakeBack ends the lane reader's wait for an announcement: a receiver
// wants its buffer back (laneInbox.front).
var errTakeBack = errors.New("tcpconn: a receiver takes its buffer back")

// lendsTo reports whether a receiver reading into buf waits for its next
// message with buf offered to the lane instead of reading the link's
// socket: that message is on the lane (announced), buf could hold a lane
// message, and no other receiver lends its own. The caller holds s.mu.
func (s *stream) lendsTo(buf []byte) bool {
	return s.order.pending > 0 && len(buf) >= s.link.cfg.LaneThreshold && (s.loan == nil || s.loan.owner == nil)
}

// offerLocked lends buf, the spare capacity of w's receiver, to the lane.
func (s *stream) offerLocked(w *waiter, buf []byte) {
	if s.loan == nil {
		s.loan = new(bufferLoan) // kept: a stream that lent once will again
	}
	s.loan.owner, s.loan.offered, s.loan.lends = w, buf, true
	s.link.lanes.offers.Add(1)
	s.endAwaitLocked()
	if s.loan.filling != nil {
		// The reader is in the middle of that message, reading whole
		// PARTs: interrupt it so that it moves what arrived into buf and
		// reads the rest there.
		s.loan.filling.SetReadDeadline(aLongTimeAgo)
	}
}

// fillingOurs tells a receiver that offers its buffer later that the
// lane's reader reads s's next message into a buffer of ours from conn
// (nil: no longer), so that the offer interrupts it. It reports whether
// a buffer is offered already: one that came after lend looked, which the
// reader takes instead.
func (s *stream) fillingOurs(conn net.Conn) (offered bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.loan == nil && conn != nil {
		s.loan = new(bufferLoan) // as offerLocked would make it
	}
	if s.loan != nil {
		s.loan.filling = conn
		offered = s.loan.offered != nil
	}
	return offered
}

// awaitOffer waits, at most laneLoanWait, for lm's receiver to offer its
// buffer before the lane's reader begins lm in one of ours, if that
// receiver lent one before and has not offered it yet. It also ends when
// the stream is closed here, when a receiver comes without a buffer to
// lend (endAwaitLocked), and when the link ends.
func (l *link) awaitOffer(lm *laneMessage) {
	s := lm.s
	s.mu.Lock()
	if s.loan == nil || !s.loan.lends || s.loan.offered != nil || s.state.Load()&streamLocalClosed != 0 {
		s.mu.Unlock()
		return
	}
	wanted := make(chan struct{})
	s.loan.wanted = wanted
	s.mu.Unlock()
	wait := laneLoanWait
	if l.cfg.laneLoanWait != 0 {
		wait = l.cfg.laneLoanWait // tests
	}
	t := time.NewTimer(wait)
	select {
	case <-wanted:
	case <-t.C:
	case <-l.done:
	}
	t.Stop()
	s.mu.Lock()
	if s.loan.wanted == wanted {
		s.loan.wanted = nil
	}
	s.mu.Unlock()
}

// arrivesBareLocked notes a receiver of s waiting for its next message, a
// lane message, with no buffer that could hold one (Receive, or a small
// ReceiveAppend buffer): the lane's reader stops waiting for an offer
// (awaitOffer), and waits for none until a receiver of s lends again.
// The caller holds s.mu.
func (s *stream) arrivesBareLocked(buf []byte) {
	if s.loan != nil && s.loan.lends && s.order.pending > 0 && len(buf) < s.link.cfg.LaneThreshold {
		s.loan.lends = false
		s.endAwaitLocked()
	}
}

// endAwaitLocked ends the lane reader's wait for an offer of s's buffer
// (awaitOffer): one came, or none will (s is closed here, or its receiver
// came without a buffer to lend).
func (s *stream) endAwaitLocked() {
	if s.loan != nil && s.loan.wanted != nil {
		close(s.loan.wanted)
		s.loan.wanted = nil
	}
}

// withdrawLocked ends an offer the lane's reader did not take.
func (s *stream) withdrawLocked() {
	if s.loan.offered != nil {
		s.loan.offered = nil
		s.link.lanes.offers.Add(-1)
	}
}

// announcedLocked is told that a message was announced on the lane for s.
// It wakes a receiver of s that waits without lending, but could: it
// offers its buffer when it looks again (receive). A receiver that waits
// with no buffer to lend arrives bare (arrivesBareLocked).
func (s *stream) announcedLocked() {
	if s.loan != nil && s.loan.owner != nil {
		return
	}
	for _, w := range s.waiters {
		if w.canLend {
			s.wakeWaiterLocked(w)
			return
		}
	}
	if len(s.waiters) > 0 {
		s.arrivesBareLocked(nil)
	}
}

// lend is the lane's reader taking the buffer offered for lm's stream, if
// lm is that stream's next message (nothing queued ahead of it) and fits.
// It may come after lm's first bytes (the receiver offered late): they
// move into the buffer.
func (l *link) lend(ln *lane, lm *laneMessage) bool {
	s := lm.s
	if s == nil || lm.lent || l.lanes.offers.Load() == 0 {
		return false
	}
	s.mu.Lock()
	if s.loan == nil {
		s.mu.Unlock()
		return false
	}
	buf := s.loan.offered
	if len(buf) < lm.total || s.queue.len() > 0 || s.loan.lm != nil || s.loan.landed.data != nil || s.state.Load()&streamLocalClosed != 0 {
		s.mu.Unlock()
		return false
	}
	s.withdrawLocked()
	s.loan.lm, s.loan.conn = lm, ln.conn
	s.mu.Unlock()
	dst := buf[:lm.total:lm.total] // the receiver waits: it is ours to fill
	if lm.m.data != nil {
		copy(dst, lm.m.data[:lm.got])
		lm.m.release()
	}
	lm.m, lm.lent = message{data: dst}, true
	ln.lent = append(ln.lent, lm)
	l.lanes.lent.Add(1)
	return true
}

// reclaim ends w's offer before its receiver's call returns. A message
// that landed in the buffer is returned (else data is nil); one still
// arriving there is moved out first by the lane's reader, which it
// interrupts.
func (s *stream) reclaim(w *waiter) message {
	s.mu.Lock()
	if s.loan == nil || s.loan.owner != w {
		s.mu.Unlock()
		return message{}
	}
	s.withdrawLocked()
	if s.loan.lm != nil {
		if s.loan.taken == nil {
			s.loan.taken = make(chan struct{})
			s.link.lanes.takeBacks.Add(1)
		}
		taken, conn := s.loan.taken, s.loan.conn
		s.mu.Unlock()
		s.link.lanes.in.interrupt() // if the reader waits for an announcement
		conn.SetReadDeadline(aLongTimeAgo)
		<-taken
		s.mu.Lock()
	}
	m := s.loan.landed
	s.loan.landed, s.loan.owner = message{}, nil
	s.mu.Unlock()
	return m
}

// letGoLocked ends lm's loan: the buffer is the receiver's alone again.
func (s *stream) letGoLocked() {
	s.loan.lm, s.loan.conn = nil, nil
	if s.loan.taken != nil {
		close(s.loan.taken)
		s.loan.taken = nil
		s.link.lanes.takeBacks.Add(-1)
	}
}

// land hands lm, read whole into its receiver's buffer, to that receiver,
// then queues what was held behind it.
func (s *stream) land(lm *laneMessage) {
	s.mu.Lock()
	s.loan.landed = lm.m
	s.letGoLocked()
	s.wakeWaiterLocked(s.loan.owner) // unless it woke already: it looks in reclaim
	s.releaseBehind(false)
}

// serveTakeBacks moves the lane messages whose receivers want their
// buffers back into buffers of ours. The lane's reader calls it between
// reads, and when a take-back interrupted one.
func (l *link) serveTakeBacks(ln *lane) {
	if l.lanes.takeBacks.Load() == 0 {
		return
	}
	kept := ln.lent[:0]
	for _, lm := range ln.lent {
		s := lm.s
		s.mu.Lock()
		asked := s.loan.taken != nil
		s.mu.Unlock()
		if !asked {
			kept = append(kept, lm)
			continue
		}
		own := lanePayload(lm.total) // the receiver waits meanwhile: its buffer is still
		copy(own.data, lm.m.data[:lm.got])
		lm.m, lm.lent = own, false
		s.mu.Lock()
		s.letGoLocked()
		s.mu.Unlock()
	}
	clear(ln.lent[len(kept):])
	ln.lent = kept
}

// landed ends lm's loan when it arrived whole.
func (ln *lane) landed(lm *laneMessage) {
	for i, x := range ln.lent {
		if x == lm {
			ln.lent = append(ln.lent[:i], ln.lent[i+1:]...)
			return
		}
	}
}

// releaseLoans lets go of every buffer lent to a lane whose reader ends:
// the messages read into them will not be completed, and must not be
// released into our pools.
func (l *link) releaseLoans(ln *lane) {
	for _, lm := range ln.lent {
		lm.s.mu.Lock()
		lm.s.letGoLocked()
		lm.s.mu.Unlock()
		lm.m, lm.lent = message{}, false
	}
	clear(ln.lent)
	ln.lent = nil
}

// interrupted reports whether a read on the lane ended by a take-back's
// deadline (the lane has no other): the deadline is cleared and the
// take-backs served, and the reader goes on. Only a deadline counts, not
// any timeout: a connection the kernel timed out (ETIMEDOUT) is lost.
func (l *link) interrupted(ln *lane, err error) bool {
	if !errors.Is(err, os.ErrDeadlineExceeded) || l.failed() {
		return false
	}
	ln.conn.SetReadDeadline(time.Time{}) // before serving: a later take-back interrupts again
	l.serveTakeBacks(ln)
	return true
}
