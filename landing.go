// SPDX-License-Identifier: MIT

package tcpconn

// A parked ReceiveAppend's buffer, offered to whoever reads the link's
// socket. When many logical connections share a link, one goroutine reads
// the socket and the others wait; a message for a waiting ReceiveAppend
// would be copied into a pooled buffer, queued, then copied once more into
// the caller's buffer by the caller. A receiver that parks offers the
// spare capacity of its buffer instead, and the reader copies a message
// whose bytes are all buffered already straight into it: one copy, no
// pooled buffer, no queue.
//
// The reader copies only bytes it holds, under the stream's lock, so a
// landing never waits for the network: a receiver that stops waiting
// (woken, Close, cancel, the link failed) takes the lock and finds its
// message landed whole or not at all. Nothing writes to the caller's
// memory after its call returned.

// landing is a stream's offered buffer; guarded by stream.mu. One receiver
// at a time offers its buffer (others on the same stream wait as usual),
// and the message that lands in it is its own: it wakes that receiver, not
// the oldest one.
type landing struct {
	owner  *waiter // the receiver whose buffer it is; nil: none offered
	buf    []byte  // its spare capacity; nil once a message landed
	landed message // the message copied into buf, for owner
}

// offerLandingLocked offers buf, the spare capacity of w's receiver (not
// empty: an empty buf marks no offer), for its next small message, unless
// another receiver of s offers one already. The caller holds s.mu.
func (s *stream) offerLandingLocked(w *waiter, buf []byte) {
	if s.landing == nil {
		s.landing = new(landing) // kept: a stream that offered once will again
	}
	if s.landing.owner == nil {
		s.landing.owner, s.landing.buf = w, buf
		s.link.landings.Add(1)
	}
}

// land copies the next n bytes of the link's frame reader, a whole message
// for s, into the buffer its parked receiver offered, and wakes that
// receiver. It reports false, having read nothing, when no buffer is
// offered, it is too small, or the message may not go before others:
// messages are queued ahead of it, or held behind one on the lane.
func (l *link) land(s *stream, n int) bool {
	if l.landings.Load() == 0 || n > l.reading.br.Buffered() {
		return false
	}
	s.mu.Lock()
	lg := s.landing
	if lg == nil || lg.buf == nil || n > len(lg.buf) || s.queue.len() > 0 || s.order.pending > 0 || s.state.Load()&streamLocalClosed != 0 {
		s.mu.Unlock()
		return false
	}
	lg.landed = message{data: lg.buf[:n:n]}
	l.reading.br.Read(lg.landed.data)
	lg.buf = nil
	l.landings.Add(-1)
	s.wakeWaiterLocked(lg.owner) // unless it woke already: it looks in takeLanded
	s.mu.Unlock()
	return true
}

// takeLanded ends w's offer before its receiver's call returns. A message
// that landed in its buffer is returned (else data is nil).
func (s *stream) takeLanded(w *waiter) message {
	s.mu.Lock()
	defer s.mu.Unlock()
	lg := s.landing
	if lg == nil || lg.owner != w {
		return message{}
	}
	if lg.buf != nil {
		s.link.landings.Add(-1)
	}
	m := lg.landed
	*lg = landing{}
	return m
}
