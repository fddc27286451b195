// SPDX-License-Identifier: MIT

package tcpconn

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// Binding a Connection to a link, in one place: a client's background
// connect attempts (pool, or placement in a fleet, then attach), attaching
// to a link (register the ID or install the catch-all), detaching (Close,
// idle timeout, loss), and the idle timer. The public methods in
// tcpconn.go call down into these; nothing here calls back up.

// binding is a Connection's attachment to one link: its record there, or
// the link's catch-all (and, on a client, the catch-all's own record, the
// empty ID, as st).
type binding struct {
	link  *link
	st    *stream
	ca    *catchAll
	moved atomic.Bool // the Connection is moving off it (drain.go)
}

// source is what the binding receives from.
func (b *binding) source() source {
	if b.ca != nil {
		return b.ca
	}
	return b.st
}

// pending reports whether messages wait to be received.
func (b *binding) pending() bool {
	src := b.source()
	box := src.box()
	box.mu.Lock()
	defer box.mu.Unlock()
	return src.hasMessageLocked()
}

// dialAttempt is one background connect of a client Connection: the pool's
// link (dialled if needed), then attach. Every call waiting for a binding
// shares it; Close cancels it.
type dialAttempt struct {
	done chan struct{} // closed when it ended; then b or err is set
	b    *binding
	err  error
}

// attach binds c to l: its ID's record, or l's catch-all. A client announces
// a new logical connection with OPEN, so that a server that speaks first (or
// a Listener) knows of a client that only receives. It never blocks.
func (c *Connection) attach(l *link) (*binding, error) {
	if c.catchAll {
		ca := &catchAll{inbox: inbox{link: l}}
		if !l.installCatchAll(ca) {
			return nil, fmt.Errorf("%w: the catch-all (empty ID)", ErrIDInUse)
		}
		var own *stream
		if c.client {
			// The catch-all's own ID: a record to send on, to finish when
			// it moves and to CLOSE in detach, announced so that a
			// Listener accepts it.
			var err error
			if own, err = l.sendStream(""); err != nil {
				l.routes.catchAll.CompareAndSwap(ca, nil)
				ca.retire(err)
				return nil, err
			}
			l.enqueueControl(appendIDControl(nil, frameOpen, "", 0))
		}
		return &binding{link: l, ca: ca, st: own}, nil
	}
	st, fresh, err := l.register(c.id, c)
	if err != nil {
		return nil, err
	}
	if fresh && c.client && !l.enqueueOpen(c.id) {
		// The record never reached the peer: it goes without a CLOSE.
		st.fail(errGoingAway)
		l.routes.remove(st)
		return nil, errGoingAway
	}
	return &binding{link: l, st: st}, nil
}

// detach undoes attach: blocked calls wake with why, the peer is told.
func (c *Connection) detach(b *binding, why error) {
	l := b.link
	if b.ca != nil {
		l.routes.catchAll.CompareAndSwap(b.ca, nil)
		b.ca.retire(why)
		if l.failed() {
			l.drainUnowned() // no catch-all will follow this one
		}
		if s, ok := l.routes.load(""); ok && c.client {
			// The client catch-all's own ID, opened by attach.
			if s.ownerIs(nil) {
				l.closeStream(s, closeNormal)
			}
		}
		return
	}
	b.st.fail(why) // first: a sender that sees the CLOSE state finds why
	l.closeStream(b.st, closeNormal)
	b.st.drain()
}

// connect returns c's binding, starting a connect attempt on a client whose
// link is gone (or, right after construction, waiting for the first one).
// c.mu is never held while the attempt dials or waits.
func (c *Connection) connect(ctx context.Context) (*binding, error) {
	c.mu.Lock()
	if c.closeErr != nil {
		c.mu.Unlock()
		return nil, c.closeErr
	}
	if b := c.bind.Load(); b != nil {
		if !b.link.failed() {
			c.mu.Unlock()
			return b, nil
		}
		if !c.client || c.final.Load() {
			c.mu.Unlock()
			return nil, b.link.linkError()
		}
		c.lost = true
		c.leaveLocked(b)
	}
	if !c.client || c.final.Load() {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	a := c.attempt
	if a == nil {
		a = c.startAttemptLocked()
	}
	c.mu.Unlock()
	select {
	case <-a.done:
		return a.b, a.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.closed:
		return nil, ErrClosed
	}
}

// startAttemptLocked starts a background connect attempt. The attempt holds
// c's pool reference until it ends, so a Close meanwhile leaves the release
// to it (the pool must not lose a link that is still being dialled).
func (c *Connection) startAttemptLocked() *dialAttempt {
	a := &dialAttempt{done: make(chan struct{})}
	c.attempt = a
	if !c.held && c.fleet == nil {
		// Held until Close or idle timeout, across failed dials, so the
		// entry keeps its backoff state. (A fleet's Connection holds the
		// entry of the endpoint it is placed on: acquireInFleet.)
		c.entry, c.held = c.owner.hold(c.addr, c.poolCfg, c.cfg), true
	}
	go c.runAttempt(a, c.entry)
	return a
}

func (c *Connection) runAttempt(a *dialAttempt, e *poolEntry) {
	var l *link
	var b *binding
	var err error
	for {
		if c.fleet != nil {
			l, err = c.acquireInFleet(c.life)
		} else {
			l, err = e.acquire(c.life, false)
		}
		if err == nil {
			b, err = c.attach(l)
		}
		if err != errGoingAway {
			break // else the pool has another link by now (acquire skips l)
		}
	}
	c.mu.Lock()
	c.attempt = nil
	switch {
	case c.closeErr != nil:
		if b != nil {
			c.detach(b, c.closeErr)
		}
		c.releaseClientLocked(l)
		b, err = nil, c.closeErr
	case err == nil:
		if c.lost {
			c.lost = false
			processScope.reconnects.Add(1)
			c.owner.scope.reconnects.Add(1)
		}
		c.bindLocked(b)
		if b.link.moveAway.Load() {
			c.moveIfMovable(b)
		}
	}
	a.b, a.err = b, err
	c.mu.Unlock()
	close(a.done)
}

// current returns the binding to use, connecting a client if needed. A
// receiver keeps a failed binding while it still holds queued messages.
func (c *Connection) current(ctx context.Context, forSend bool) (*binding, error) {
	if b := c.bind.Load(); b != nil && (!b.link.failed() || !forSend) {
		return b, nil
	}
	return c.connect(ctx)
}

// afterError maps an internal error and, on a client, drops a binding whose
// socket or record is finished so the next call reconnects.
func (c *Connection) afterError(ctx context.Context, b *binding, err error) error {
	if err == errCanceled {
		return ctx.Err()
	}
	if c.client && !c.final.Load() && !errors.Is(err, ErrClosed) && !errors.Is(err, ErrMessageTooLarge) && !errors.Is(err, ErrTooManyStreams) {
		c.mu.Lock()
		if c.bind.Load() == b {
			c.lost = c.lost || b.link.failed()
			c.leaveLocked(b)
		}
		c.mu.Unlock()
	}
	return err
}

func (c *Connection) bindLocked(b *binding) {
	c.bind.Store(b)
	b.link.bound.Add(1)
	c.touch()
	if c.idle > 0 {
		if c.idleTimer == nil {
			c.idleTimer = time.AfterFunc(c.idle, c.checkIdle)
		} else {
			c.idleTimer.Reset(c.idle)
		}
	}
}

// leaveLocked unbinds a client from a binding it cannot use any more (its
// socket was lost, or the peer closed its ID), keeping what it had
// received whole for Receive (carried).
func (c *Connection) leaveLocked(b *binding) {
	c.carried.take(b.source())
	c.unbindLocked(b, ErrClosed)
}

// unbindLocked detaches c from its link: the peer is told (CLOSE), queued
// messages are released, and blocked calls wake with the stream's error.
// It never blocks (the socket of a last user closes in the background).
//
// Blocked calls are woken only after the binding is gone, so a call made
// after one of them returned finds no binding and sees why (through
// connect) rather than racing the teardown.
func (c *Connection) unbindLocked(b *binding, why error) {
	c.bind.Store(nil)
	c.reply.Store(nil)
	b.link.bound.Add(-1)
	if b.link.failed() {
		// The link died first (a concurrent call saw it and unbinds): that
		// is what a blocked Receive must report, not a local close.
		why = b.link.err
	}
	c.detach(b, why)
	c.releaseClientLocked(b.link)
}

// releaseClientLocked drops a client's hold on its pool entry (bound to l,
// or nil).
func (c *Connection) releaseClientLocked(l *link) {
	if c.client && c.held {
		c.held = false
		c.entry.release(l)
		c.entry = nil
	}
}

func (c *Connection) touch() { c.lastActive.Store(int64(time.Since(epoch))) }

var epoch = time.Now()

// checkIdle runs on the idle timer; it re-arms itself for the remaining time
// so the hot path only stores a timestamp.
func (c *Connection) checkIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d := c.draining.Load(); d != nil && d.ended() {
		// A move's old binding that no Receive came to finish: its link
		// and pool entry go, what it holds unread is kept (carried).
		c.dropDrainingLocked(d)
	}
	b := c.bind.Load()
	if b == nil || c.closeErr != nil {
		return
	}
	rest := c.idle - (time.Since(epoch) - time.Duration(c.lastActive.Load()))
	if rest > 0 || b.pending() {
		c.idleTimer.Reset(max(rest, c.idle/8))
		return
	}
	why := ErrIdleTimeout
	if b.link.failed() {
		why = b.link.err // the socket died first: that stays the reason
	}
	c.unbindLocked(b, why)
	c.finishServerLocked(why)
}

// finishServerLocked ends a server Connection for good (servers never
// reconnect) and drops its hold on the wrapped socket.
func (c *Connection) finishServerLocked(err error) {
	if c.client {
		return
	}
	c.closeErr = err
	if c.wrapped != nil && c.held {
		c.held = false
		releaseWrapped(c.wrapped)
	}
}

// acquireInFleet places a Connection of a fleet and returns its endpoint's
// link: the next healthy endpoint is tried at once when one fails to dial
// (it is ejected), so an ID answers elsewhere without waiting for a
// backoff. With none healthy it tries one ejected endpoint, after its
// backoff, and reports that dial's error: a call never waits out the
// backoff of every endpoint in turn.
func (c *Connection) acquireInFleet(ctx context.Context) (*link, error) {
	f := c.fleet
	var skip []string
	var lastErr error
	for {
		addr, healthy, err := f.place(ctx, c, skip)
		if err != nil {
			if lastErr != nil && ctx.Err() == nil {
				return nil, lastErr
			}
			return nil, err
		}
		e := c.holdEntry(addr)
		if e == nil {
			return nil, ErrClosed
		}
		l, err := e.acquire(ctx, healthy)
		if err == nil {
			return l, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		f.eject(addr, err)
		if !healthy {
			return nil, err
		}
		skip, lastErr = append(skip, addr), err
	}
}

// holdEntry makes c hold addr's pool entry (and no other), or returns nil
// once c is closed.
func (c *Connection) holdEntry(addr string) *poolEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeErr != nil {
		return nil
	}
	if c.held {
		if c.entry.key.address == addr {
			return c.entry
		}
		c.releaseClientLocked(nil)
	}
	c.entry, c.held = c.owner.hold(addr, c.poolCfg, c.cfg), true
	return c.entry
}
