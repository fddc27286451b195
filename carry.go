// SPDX-License-Identifier: MIT

package tcpconn

import (
	"sync"
	"sync/atomic"
)

// carried holds the messages a client Connection had received whole on a
// binding it has left because the socket was lost or the peer closed its
// ID: a Send that reconnects (or fails) must not throw them away, so
// Receive returns them, in order, before anything the next binding brings.
// They keep their record, which still owns their credit and Budget hold.
//
// Lock order: Connection.mu, then carried.mu, then the source's inbox lock.
type carried struct {
	n  atomic.Int64 // messages held: receive skips the lock when there are none
	mu sync.Mutex
	q  fifo[carriedMessage] // guarded by mu
}

type carriedMessage struct {
	from *stream
	m    message
}

// take moves every message queued in src behind those already held.
func (c *carried) take(src source) {
	c.mu.Lock()
	defer c.mu.Unlock()
	box := src.box()
	box.mu.Lock()
	defer box.mu.Unlock()
	for {
		from, m, ok := src.popLocked()
		if !ok {
			return
		}
		c.q.push(carriedMessage{from, m})
		c.n.Add(1)
	}
}

// pop takes the oldest held message; its record's credit goes back.
func (c *carried) pop() (*stream, message, bool) {
	if c.n.Load() == 0 {
		return nil, message{}, false
	}
	c.mu.Lock()
	cm, ok := c.q.pop()
	if ok {
		c.n.Add(-1)
	}
	c.mu.Unlock()
	if ok {
		cm.from.consumed(cm.m)
	}
	return cm.from, cm.m, ok
}

// release lets every held message go (the Connection is closed). It
// never writes on the caller's goroutine, which holds Connection.mu.
func (c *carried) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		cm, ok := c.q.pop()
		if !ok {
			return
		}
		c.n.Add(-1)
		cm.m.release()
		cm.from.releaseLink(cm.m.cost(), controlAsync)
	}
}
