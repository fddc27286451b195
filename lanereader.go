// SPDX-License-Identifier: MIT

package tcpconn

import (
	"errors"
	"fmt"
	"io"
	"time"
)

// The lane's reader: PARTs in, matched with their BULK announcements
// (laneinbox.go), delivered in their ID's order (laneorder.go).

// laneReadLoop reads the lane until it fails, which fails the link.
func (l *link) laneReadLoop(ln *lane) {
	err := l.readLane(ln)
	l.releaseLoans(ln)
	if errors.Is(err, io.EOF) && canHalfClose(ln.conn) && l.lanes.in.empty() && l.endLane(ln) {
		return // the peer ended the lane, between messages
	}
	if !l.failed() {
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("%w: bulk lane closed by peer (%w)", ErrLinkLost, io.EOF)
		} else if !errors.Is(err, ErrProtocol) {
			err = fmt.Errorf("%w: bulk lane: %w", ErrLinkLost, err)
		}
		l.fail(err)
	}
}

// readLane reads PARTs: each continues the oldest message announced by
// BULK for its ID (waiting for the announcement if the lane was faster).
func (l *link) readLane(ln *lane) error {
	br := ln.br
	for {
		h, err := peekHeader(br, &l.keepAlive.heard)
		if err != nil {
			if l.interrupted(ln, err) {
				continue
			}
			return err
		}
		if h.kind != kindPart {
			name := frameName(h.typ)
			return protocolErrorf(name, "", "only PART frames travel on a bulk lane, not %s", name)
		}
		ln.used.Store(true)
		lm, err := l.lanes.in.front(bytesToString(h.id), l.done, &l.lanes.takeBacks)
		if err == errTakeBack {
			l.serveTakeBacks(ln)
			continue
		}
		if err != nil {
			return err
		}
		if uint64(h.length)+uint64(h.rest) != uint64(lm.total-lm.got) {
			return protocolErrorf("PART", string(h.id), "bulk lane PART of %d bytes with %d to follow, where %d bytes of the message announced are missing", h.length, h.rest, lm.total-lm.got)
		}
		br.Discard(h.size)
		if lm.got == 0 && lm.s != nil && len(ln.lent) == 0 {
			// Not while another message is read into a receiver's buffer:
			// its take-back needs the reader.
			l.awaitOffer(lm)
		}
		end := lm.got + int(h.length)
		for lm.got < end {
			// Into its receiver's buffer if it offered one, at the first
			// bytes or since: else into one of ours.
			if !l.lend(ln, lm) && lm.m.data == nil {
				lm.m = lanePayload(lm.total)
			}
			if lm.got == len(lm.m.data) {
				lm.m = grownPayload(lm.m, lm.got, end, lm.total)
			}
			// The rest of the part in one ReadFull: each read asks for
			// all of it, so it takes what the kernel holds and the next
			// one waits for the peer (PERFORMANCE.md, "Small messages
			// beside bulk ones"). The frame reader counts what arrives
			// for the lane's keepalive.
			filling := !lm.lent && lm.s != nil
			if filling && lm.s.fillingOurs(ln.conn) && l.lend(ln, lm) {
				// The receiver offered its buffer after lend looked
				// (while ours was made, say): it takes this message.
				lm.s.fillingOurs(nil)
				continue
			}
			k, err := br.ReadFull(lm.m.data[lm.got:min(len(lm.m.data), end)])
			if filling {
				lm.s.fillingOurs(nil)
			}
			lm.got += k
			if err != nil {
				if l.interrupted(ln, err) {
					continue
				}
				return truncated(err, "a bulk lane PART")
			}
			l.serveTakeBacks(ln)
		}
		if h.rest == 0 {
			if !l.lanes.in.finish(lm) {
				if !lm.lent {
					lm.m.release() // given up: the link failed meanwhile
				}
				return ErrClosed // and laneReadLoop ends a loan
			}
			l.laneArrived(ln, lm)
		}
	}
}

// awaitLaneMessages waits, at most closeWriteTimeout, for the messages
// announced on the link's socket to come off the lane, once that socket
// has ended cleanly: a peer that closes gracefully wrote them before its
// end, but the two sockets deliver independently, and failing the link
// at the first end would drop what its lane still brings.
func (l *link) awaitLaneMessages() {
	t := time.NewTimer(closeWriteTimeout)
	defer t.Stop()
	l.lanes.in.awaitEmpty(t.C, l.done)
}

// lanePayload returns the buffer a lane message is read into, whole, once
// its first bytes are here: growing it as the bytes come would copy a
// 4 MiB message three times over and feed the garbage collector, whose
// pauses the small messages beside it would feel. Its BULK was charged
// against the link's credit, so the buffers of unfinished lane messages
// are bounded like messages in flight: the link window plus one message.
func lanePayload(total int) message {
	if total <= smallMessageLimit {
		return newPayload(total)
	}
	if b, ok := takeLarge(total); ok {
		return message{data: b}
	}
	return message{data: make([]byte, total)}
}

// laneArrived hands a message that came whole on the lane to its record,
// and the messages held behind it.
func (l *link) laneArrived(ln *lane, lm *laneMessage) {
	l.counters.messagesIn.Add(1)
	l.counters.bytesIn.Add(uint64(lm.total))
	l.lanes.bulkIn.Add(1)
	if lm.s == nil {
		l.drop(lm.m, lm.cost)
		return
	}
	if lm.lent {
		ln.landed(lm)
		lm.s.land(lm)
		return
	}
	lm.s.fromLane(lm.m)
	l.interruptDirect() // a receiver reading the link's socket for itself looks again
}

// onBulk is the announcement of a message coming on the lane: admitted
// whole like a data frame, and its place in the ID's order kept.
func (l *link) onBulk(body []byte) error {
	idb, n := splitIDBody(body)
	if !l.lanesAllowed() {
		return protocolErrorf("BULK", string(idb), "BULK without a bulk lane")
	}
	if uint64(n) > uint64(l.cfg.MaxMessageSize) {
		return protocolErrorf("BULK", string(idb), "message of %d bytes exceeds the limit of %d", n, l.cfg.MaxMessageSize)
	}
	if len(l.reading.partials) > 0 && l.reading.partials[bytesToString(idb)] != nil {
		return protocolErrorf("BULK", string(idb), "BULK on %q inside a message in parts", idb)
	}
	s, err := l.route(idb)
	if err != nil {
		return err
	}
	cost := int64(n) + messageOverhead
	if s, err = l.admit("BULK", s, cost); err != nil {
		return err
	}
	if l.inflow.credit.Load() <= 0 {
		// A lane message larger than what was left of the link's credit:
		// the window grows by it, as for a message in parts, so that small
		// messages beside it do not wait until it has arrived.
		l.growForMessage(cost)
	}
	lm := &laneMessage{s: s, total: int(n), cost: cost}
	if s != nil {
		s.expectLane()
		lm.id = s.id
	} else {
		lm.id = string(idb)
	}
	l.lanes.in.announce(lm)
	return nil
}

// lanesAllowed reports whether the peer may announce lane messages: this
// side takes lanes, and (dialling side) has opened one, which the peer may
// use until it has read this side's end of it (laneEnding).
func (l *link) lanesAllowed() bool {
	if l.cfg.DisableLanes {
		return false
	}
	if !l.client {
		return true
	}
	l.wq.mu.Lock()
	defer l.wq.mu.Unlock()
	return l.lanes.state == laneOpening || l.lanes.state == laneUp || l.lanes.state == laneEnding
}
