// SPDX-License-Identifier: MIT

package tcpconn

import "fmt"

// The lane's writer: a message goes out in PARTs of up to lanePart while
// others share the lane, in turns, up to laneBatch a write; its sender
// waits until its last part is written, as for a message in parts on the
// link's socket.

// sendOnLane announces a message with BULK on the link's socket and
// queues its bytes on the lane, then waits until they are written. The
// caller holds wq.mu, which it releases, and took the link's credit; the
// ID's is taken here, whole, as for a data frame. Like a Send on the
// link's socket, it writes for itself when nobody else is writing: the
// BULK first, then the lane, with no goroutine hand-off.
func (l *link) sendOnLane(ln *lane, s *stream, data []byte, cost int64) error {
	s.outflow.take(cost)
	var fb [maxControlFrame]byte
	l.wq.wb.appendCopy(appendIDControl(fb[:0], frameBulk, s.id, uint32(len(data))), nil)
	s.inParts = true // the ID's next message waits until this one is written
	flushMain := !l.wq.busy
	if flushMain {
		l.wq.busy = true
	}
	r := getWriteReq()
	r.s, r.data = s, data
	// Queued under wq.mu, so an idle check that ends the lane either
	// comes first (and this message went elsewhere) or sees it queued.
	writeLane, err := ln.enqueue(r)
	l.wq.mu.Unlock()
	if flushMain {
		l.flush()
	}
	switch {
	case err != nil:
		l.laneWritten(r, err)
	case writeLane:
		l.laneWriteLoop(ln)
	}
	<-r.done
	err = r.err
	putWriteReq(r)
	return err
}

// enqueue adds r to the messages the lane writes; writeLane: nobody
// writes the lane now, and the caller is to (laneWriteLoop).
func (ln *lane) enqueue(r *writeReq) (writeLane bool, err error) {
	ln.mu.Lock()
	defer ln.mu.Unlock()
	if ln.err != nil {
		return false, ln.err
	}
	ln.queue = append(ln.queue, r)
	ln.used.Store(true)
	if ln.busy {
		return false, nil
	}
	ln.busy = true
	return true, nil
}

// laneWriteLoop writes the lane's queue until it is empty: each write
// carries a part of every queued message, in turn, up to laneBatch bytes.
func (l *link) laneWriteLoop(ln *lane) {
	written := ln.written[:0]
	for {
		ln.mu.Lock()
		if len(ln.queue) == 0 || ln.err != nil {
			ln.busy = false
			ending := ln.ending && ln.err == nil
			ln.mu.Unlock()
			if ending {
				l.laneWriteEnded(ln)
			}
			return
		}
		var n int
		written, n = ln.takeLocked(written[:0])
		ln.written = written // one writer at a time (busy): its scratch
		ln.mu.Unlock()
		ln.wv = ln.segs
		err := writeSegments(ln.conn, ln.tcp, &ln.wv)
		clear(ln.segs)
		if err != nil {
			l.fail(fmt.Errorf("%w: bulk lane: write: %w", ErrLinkLost, err))
			err = l.linkError()
		}
		l.counters.bytesOut.Add(uint64(n))
		for _, r := range written {
			l.laneWritten(r, err)
		}
		clear(written)
		if err != nil {
			return
		}
	}
}

// takeLocked fills segs with the next write: parts of the queued messages
// in turn. It returns the messages this write completes and the payload
// bytes it carries.
func (ln *lane) takeLocked(done []*writeReq) ([]*writeReq, int) {
	ln.hdrs, ln.segs = ln.hdrs[:0], ln.segs[:0]
	share := max(lanePart, laneBatch/len(ln.queue))
	taken := 0
	for taken < laneBatch && len(ln.queue) > 0 {
		if ln.next >= len(ln.queue) {
			ln.next = 0
		}
		r := ln.queue[ln.next]
		n := min(len(r.data)-r.off, share, laneBatch-taken)
		rest := len(r.data) - r.off - n
		start := len(ln.hdrs)
		ln.hdrs = appendPartHeader(ln.hdrs, r.s.id, rest, n)
		ln.segs = append(ln.segs, ln.hdrs[start:len(ln.hdrs):len(ln.hdrs)])
		if n > 0 {
			ln.segs = append(ln.segs, r.data[r.off:r.off+n])
		}
		r.off += n
		taken += n
		if rest == 0 {
			ln.queue = append(ln.queue[:ln.next], ln.queue[ln.next+1:]...)
			done = append(done, r)
			continue
		}
		ln.next++
	}
	return done, taken
}

// laneWritten ends r's wait: the ID's next message may go.
func (l *link) laneWritten(r *writeReq, err error) {
	l.wq.mu.Lock()
	r.s.inParts = false
	l.wq.wakeCreditLocked()
	l.wq.mu.Unlock()
	if err == nil {
		l.counters.messagesOut.Add(1)
	}
	r.err = err
	r.done <- struct{}{}
}
