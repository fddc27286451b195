// SPDX-License-Identifier: MIT

package tcpconn

import (
	"fmt"
	"net"
	"time"
)

// A lane's end when idle. The dialling side checks every laneIdle whether
// the lane carried anything; if not, it puts nothing more on it and
// half-closes it once its queue is written. The peer, reading that
// half-close between messages, does the same; the lane closes once both
// have, and the next large message opens a new one. A socket that cannot
// half-close (net.Pipe) keeps its lane until the link ends.

// startIdleCheck arms the dialling side's idle check of ln.
func (l *link) startIdleCheck(ln *lane) {
	if l.client {
		ln.mu.Lock() // the check may run before AfterFunc returns
		ln.idle = time.AfterFunc(l.laneIdleAfter(), func() { l.laneIdleCheck(ln) })
		ln.mu.Unlock()
	}
}

func (l *link) laneIdleAfter() time.Duration {
	if l.cfg.laneIdle != 0 {
		return l.cfg.laneIdle // tests
	}
	return laneIdle
}

// stopIdleCheck stops the idle check, if there is one.
func (ln *lane) stopIdleCheck() {
	ln.mu.Lock()
	defer ln.mu.Unlock()
	if ln.idle != nil {
		ln.idle.Stop()
	}
}

// laneIdleCheck ends a lane that carried nothing since the last check:
// no new messages go on it, and this side half-closes it once its queue is
// written; the peer does the same when it reads that (endLane).
func (l *link) laneIdleCheck(ln *lane) {
	if ln.used.Swap(false) || !l.lanes.in.empty() {
		ln.mu.Lock()
		ln.idle.Reset(l.laneIdleAfter())
		ln.mu.Unlock()
		return
	}
	if !canHalfClose(ln.conn) {
		return // it stays until its link ends
	}
	l.wq.mu.Lock()
	if l.lanes.cur != ln || l.lanes.state != laneUp {
		l.wq.mu.Unlock()
		return
	}
	l.lanes.state = laneEnding
	ln.mu.Lock()
	ln.ending = true
	done := !ln.busy
	ln.mu.Unlock()
	l.wq.mu.Unlock()
	if done {
		l.laneWriteEnded(ln)
	}
}

// halfCloser is a socket that can end its write side alone (TCP, TLS).
type halfCloser interface{ CloseWrite() error }

func canHalfClose(conn net.Conn) bool {
	_, ok := conn.(halfCloser)
	return ok
}

// endLane handles the peer's half-close of the lane, between frames with
// nothing announced pending: the peer puts nothing more on it, so neither
// does this side; it half-closes once its queue is written. false: the
// lane is not the link's any more.
func (l *link) endLane(ln *lane) bool {
	l.wq.mu.Lock()
	if l.lanes.cur != ln {
		l.wq.mu.Unlock()
		return false
	}
	if l.lanes.state == laneUp {
		l.lanes.state = laneEnding
	}
	ln.mu.Lock()
	ln.read = true
	ln.ending = true
	idle := !ln.busy // else its writer ends it once the queue is written
	ln.mu.Unlock()
	l.wq.mu.Unlock()
	if idle {
		l.laneWriteEnded(ln)
	}
	return true
}

// laneWriteEnded half-closes the lane once this side has written all it
// had for it (unless it did already), and retires it if the peer has
// ended it too.
func (l *link) laneWriteEnded(ln *lane) {
	ln.mu.Lock()
	if ln.err != nil {
		ln.mu.Unlock()
		return
	}
	first := !ln.wrote
	ln.wrote = true
	ln.mu.Unlock()
	if first {
		if err := ln.conn.(halfCloser).CloseWrite(); err != nil {
			l.fail(fmt.Errorf("%w: bulk lane: half-close: %w", ErrLinkLost, err))
			return
		}
	}
	l.retireLane(ln)
}

// retireLane closes a lane both sides have ended; the link may open or
// take a new one.
func (l *link) retireLane(ln *lane) {
	ln.mu.Lock()
	both := ln.wrote && ln.read
	ln.mu.Unlock()
	if !both {
		return
	}
	l.wq.mu.Lock()
	if l.lanes.cur == ln {
		l.lanes.cur, l.lanes.state = nil, laneNone
	}
	l.wq.mu.Unlock()
	ln.stopIdleCheck()
	ln.conn.Close()
	forgetLaneSocket(ln.conn)
}
