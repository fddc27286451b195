// SPDX-License-Identifier: MIT

package tcpconn

// laneOrder keeps one record's messages in the order they were sent
// across the link's two sockets (lane.go). A message on the bulk lane is
// announced by BULK at its place among the ID's frames on the link's
// socket; what the link's socket brings for the ID after that waits here
// until the lane has brought the announced message. Guarded by stream.mu.
type laneOrder struct {
	pending  int              // messages announced whose bytes are still on the lane
	behind   fifo[heldBehind] // what came after the first of them, in order
	closeErr error            // the peer's CLOSE of the ID, held behind them too
}

// heldBehind is a message held behind a lane message, or (bulk) the place
// of a later lane message among them.
type heldBehind struct {
	m    message
	bulk bool
}

// expectLane records a message announced for s by BULK.
func (s *stream) expectLane() {
	s.mu.Lock()
	if s.order.pending > 0 {
		s.order.behind.push(heldBehind{bulk: true})
	}
	s.order.pending++
	s.announcedLocked()
	s.mu.Unlock()
}

// onLane reports whether messages announced for s are still on the lane.
func (s *stream) onLane() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.order.pending > 0
}

// holdLocked keeps m behind a message still on the lane; false if nothing
// is on the lane for s, so m may be queued now.
func (s *stream) holdLocked(m message) bool {
	if s.order.pending == 0 {
		return false
	}
	s.order.behind.push(heldBehind{m: m})
	return true
}

// deferCloseLocked holds the peer's CLOSE behind the messages still on the
// lane; false if there are none.
func (s *stream) deferCloseLocked(err error) bool {
	if s.order.pending == 0 {
		return false
	}
	s.order.closeErr = err
	return true
}

// fromLane queues m, the oldest message announced for s, then what was
// held behind it up to the next one announced.
func (s *stream) fromLane(m message) {
	s.mu.Lock()
	s.queueLocked(m)
	s.mu.Lock()
	s.releaseBehind(false)
}

// laneAbandoned releases everything held: the lane's messages will not
// come (the link failed), and what arrived whole after them is not lost
// with them.
func (s *stream) laneAbandoned() {
	s.mu.Lock()
	if s.order.pending == 0 {
		s.mu.Unlock()
		return
	}
	s.releaseBehind(true)
}

// releaseBehind queues held messages in order: up to the next lane message
// (all of them if abandoned), then, once nothing is on the lane, ends the
// record as the peer's held CLOSE said. The caller holds s.mu, which it
// releases; messages are queued one at a time, and what arrives meanwhile
// goes behind them, as pending stays up until the line is empty.
func (s *stream) releaseBehind(abandoned bool) {
	for {
		h, ok := s.order.behind.pop()
		if !ok || h.bulk && !abandoned {
			if abandoned {
				s.order.pending = 0
			} else {
				s.order.pending--
			}
			var closeErr error
			if s.order.pending == 0 {
				closeErr, s.order.closeErr = s.order.closeErr, nil
			}
			s.mu.Unlock()
			if closeErr != nil {
				s.link.endByPeer(s, closeErr)
			}
			return
		}
		if h.bulk {
			continue
		}
		s.queueLocked(h.m)
		s.mu.Lock()
	}
}
