// SPDX-License-Identifier: MIT

package tcpconn

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// Moving a client Connection off a link its server drains (a GOAWAY from
// Listener.Shutdown or MaxLinkAge), without losing a message either way:
//
//  1. The Connection gets a new binding where it would be placed now (a new
//     link to its endpoint, or another endpoint of its fleet). Its ID is
//     opened there; Sends go there from now on.
//  2. On the old link it sends CLOSE(id, finished) behind every message it
//     sent there, and sends nothing more there. A Send that was waiting for
//     credit on the old record finds it finished (errMoved) and goes to
//     the new binding. A message being sent in parts is let finish first.
//  3. The server's side of the ID sees the end of its messages (EOF, after
//     everything queued) but may still send: its replies to what it
//     received keep coming on the old link, and the client keeps reading
//     them there, before anything of the new binding (order is kept).
//  4. The server closes its side (CLOSE) when its handler ends; the old
//     binding then ends for the client, which reads on from the new one.
//
// If the new binding cannot be had (no endpoint answers), the Connection
// stays where it is, as it would without the move; the link's loss later
// is then a loss as any other.

// errMoved: the record a Send used has been finished by a move; the
// Connection's binding is the new one.
var errMoved = errors.New("tcpconn: logical connection moved")

// errGoingAway: attach found the link's GOAWAY read before its OPEN could
// go; the caller takes another link.
var errGoingAway = fmt.Errorf("%w: the server asked for new logical connections to go elsewhere", ErrLinkLost)

// moveRetry spaces attempts to finish a record while a message in parts is
// being sent on it.
const moveRetry = 5 * time.Millisecond

// moveFrom moves every named client Connection bound to l.
func (cl *Client) moveFrom(l *link) {
	cl.mu.Lock()
	conns := slices.Collect(maps.Keys(cl.conns))
	cl.mu.Unlock()
	for _, c := range conns {
		if b := c.bind.Load(); b != nil && b.link == l {
			c.moveIfMovable(b)
		}
	}
}

// moveIfMovable starts c's move off b unless c cannot move (a server's
// catch-all, a byte stream). A Connection that binds to a link after its
// GOAWAY asked for a move (it was dialled or chosen just before) calls it
// too.
func (c *Connection) moveIfMovable(b *binding) {
	if b.st != nil && !c.final.Load() {
		go c.move(b)
	}
}

// ended reports whether b will bring nothing more: the peer closed its
// record and nothing of it is still on the bulk lane (the peer's CLOSE
// waits behind such a message), or its link is gone. A catch-all's record
// is its own ID: IDs the server opened to it on the old link end with
// that link.
func (b *binding) ended() bool {
	return b.link.failed() || b.st != nil && b.st.state.Load()&streamPeerClosed != 0 && !b.st.onLane()
}

// move rebinds c from old to a new place (steps 1 and 2 above). It gives
// up, leaving c on old, if no new link is had within DialTimeout.
func (c *Connection) move(old *binding) {
	ctx, cancel := context.WithTimeout(c.life, c.cfg.DialTimeout)
	defer cancel()
	moved := false
	if c.fleet != nil {
		defer func() {
			if !moved {
				c.fleet.stay(c, old.link.endpoint)
			}
		}()
	}
	for {
		addr, healthy := c.addr, false
		if c.fleet != nil {
			var err error
			if addr, healthy, err = c.fleet.place(ctx, c, nil); err != nil {
				return
			}
		}
		e := c.owner.hold(addr, c.poolCfg, c.cfg)
		nl, err := e.acquire(ctx, c.fleet == nil || healthy)
		if err != nil {
			e.release(nil)
			if c.fleet != nil && ctx.Err() == nil {
				c.fleet.eject(addr, err)
				if healthy {
					continue // the next endpoint, at once
				}
			}
			return
		}
		switch c.rebind(old, nl, e) {
		case moveDone:
			moved = true
			return
		case moveLater:
			t := time.NewTimer(moveRetry)
			select {
			case <-t.C:
				continue
			case <-ctx.Done():
				t.Stop()
				return
			}
		default:
			return
		}
	}
}

type moveResult int

const (
	moveDone      moveResult = iota
	moveLater                // a message in parts is on its way on the old record, a move before is not done, or the new link went
	moveAbandoned            // c left the binding meanwhile
)

// rebind attaches c to nl (entry e, which the caller holds for it) and
// finishes its old record, unless c left old meanwhile.
func (c *Connection) rebind(old *binding, nl *link, e *poolEntry) moveResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeErr != nil || c.bind.Load() != old {
		e.release(nil)
		return moveAbandoned
	}
	if d := c.draining.Load(); d != nil {
		// A move before this one is still reading its old binding: one at
		// a time. Once that binding has ended, what it holds unread is
		// kept (carried) and it goes.
		if !d.ended() {
			e.release(nil)
			return moveLater
		}
		c.dropDrainingLocked(d)
	}
	nb, err := c.attach(nl)
	if err != nil {
		e.release(nil)
		if nl.failed() || nl.goingAway.Load() || c.catchAll && errors.Is(err, ErrIDInUse) {
			// The new link aged or went while we waited, or another
			// catch-all took it: another place.
			return moveLater
		}
		return moveAbandoned
	}
	old.moved.Store(true)
	c.draining.Store(old) // receive reads it first, until the server closes it
	c.drainEntry, c.entry = c.entry, e
	c.bind.Store(nb)
	nb.link.bound.Add(1)
	if !old.link.finishStream(old.st) {
		// Not now: undo (the new record is closed again) and retry.
		c.bind.Store(old)
		c.entry, c.drainEntry = c.drainEntry, nil
		c.draining.Store(nil)
		old.moved.Store(false)
		nb.link.bound.Add(-1)
		c.detach(nb, ErrClosed)
		e.release(nb.link)
		if old.link.failed() {
			return moveAbandoned
		}
		return moveLater
	}
	old.link.logger().Debug("tcpconn: logical connection moving", "id", c.id, "to", nb.link.endpoint)
	if nl.moveAway.Load() {
		c.moveIfMovable(nb) // its new link is draining too
	}
	return moveDone
}

// A server's side of a drain: GOAWAY with a code that asks the client to
// move its IDs, and a PING behind it. The client answers the PING after it
// has read the GOAWAY, and it opens no ID on the link once it has
// (enqueueOpen): so once the PONG is back, every ID it will ever open on
// the link has arrived, and a link with none left is done with.

// goAwayDraining sends the GOAWAY and its PING, whose value it returns.
func (l *link) goAwayDraining(code goAwayCode, reason string) uint32 {
	l.drainingLanes.Store(true)
	l.enqueueControl(appendGoAway(nil, uint32(code), reason))
	return l.ping()
}

// drained reports whether a link sent goAwayDraining (PING value seq)
// carries no logical connection its client may still use, and no message
// announced for its bulk lane is still on its way (an ID the peer closed
// behind one is out of the route table, but its message must arrive).
func (l *link) drained(seq uint32) bool {
	return l.pongedSince(seq) && l.routes.n.Load() == 0 && l.lanes.in.empty()
}

// enqueueOpen announces a new ID with OPEN, unless the peer's GOAWAY was
// read first (the other half of the drain barrier above); then the caller
// takes the ID elsewhere.
func (l *link) enqueueOpen(id string) bool {
	var fb [maxControlFrame]byte
	l.wq.mu.Lock()
	defer l.wq.mu.Unlock()
	switch {
	case l.goingAway.Load():
		return false
	case l.wq.sealedLocked():
		return true // nothing goes out any more: the link's end reports why
	}
	l.wq.wb.appendCopy(appendIDControl(fb[:0], frameOpen, id, 0), nil)
	l.kickWriterLocked()
	return true
}

// finishStream sends CLOSE(id, finished) for s behind everything queued for
// it, and marks s so that nothing more is sent on it. It refuses while a
// message in parts is being sent on s, or once s or the link is ending.
func (l *link) finishStream(s *stream) bool {
	l.wq.mu.Lock()
	if s.inParts || s.state.Load() != 0 || l.wq.sealedLocked() {
		l.wq.mu.Unlock()
		return false
	}
	s.state.Or(streamFinished)
	var fb [maxControlFrame]byte
	l.wq.wb.appendCopy(appendIDControl(fb[:0], frameClose, s.id, uint32(closeFinished)), nil)
	l.kickWriterLocked()
	l.wq.wakeCreditLocked() // a Send waiting for credit here goes to the new binding
	l.wq.mu.Unlock()
	return true
}

// finishDraining ends the old binding of a move once the server closed
// its side (or the old link ended): step 4 above.
func (c *Connection) finishDraining(d *binding) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropDrainingLocked(d)
}

// dropDrainingLocked releases d if it is still c's draining binding; what
// it holds unread is kept for Receive (carried).
func (c *Connection) dropDrainingLocked(d *binding) {
	if d == nil || c.draining.Load() != d {
		return
	}
	// What d holds goes to carried before d stops being the draining
	// binding: a receive that finds no draining binding finds them there.
	c.carried.take(d.source())
	c.draining.Store(nil)
	d.link.bound.Add(-1)
	c.detach(d, ErrClosed)
	e := c.drainEntry
	c.drainEntry = nil
	e.release(d.link)
}
