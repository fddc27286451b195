// SPDX-License-Identifier: MIT

package tcpconn

import (
	"slices"
	"time"
)

// partScheduler decides what of the messages in parts goes into the next
// write, behind every small and control frame already queued: parts round
// robin among those messages, one part of FrameSize while small messages
// are about (one was queued within smallQuiet), else parts of up to burst
// bytes, which grows while writes are fast and falls back when they are
// slow, so that a PING still passes within a few milliseconds. Guarded by
// the link's wq.mu.
type partScheduler struct {
	bulk    []*writeReq // messages in parts not yet fully queued, round robin
	next    int         // whose part goes next
	smallAt int64       // nanotime a whole (small) message was last queued
	burst   int         // bytes of parts a quiet write may carry
}

const (
	// smallQuiet: parts go one per write while a small message was queued
	// this recently.
	smallQuiet = time.Millisecond
	// bulkBurst bounds the parts one write carries when no small message
	// is about: a lone 1 MiB message goes in one writev, as it would whole.
	// The burst starts at FrameSize and doubles after each write of parts
	// that took less than burstFast, back to FrameSize after one that took
	// longer than burstSlow (a slow path: a PING must not wait long).
	bulkBurst = 1 << 20
	burstFast = 2 * time.Millisecond
	burstSlow = 5 * time.Millisecond
)

// budget returns how many bytes of parts the next write may carry at now.
func (p *partScheduler) budget(frameSize int, now int64) int {
	if now-p.smallAt > int64(smallQuiet) {
		// Nothing small to let through: larger parts, so that a lone bulk
		// transfer costs the peer no more reads than a whole message.
		return max(frameSize, p.burst)
	}
	return frameSize
}

// add queues a message in parts behind the others.
func (p *partScheduler) add(r *writeReq) { p.bulk = append(p.bulk, r) }

// current returns the message whose part goes next.
func (p *partScheduler) current() *writeReq {
	if p.next >= len(p.bulk) {
		p.next = 0
	}
	return p.bulk[p.next]
}

// skip moves on to the next message.
func (p *partScheduler) skip() { p.next++ }

// remove takes r out of the round robin.
func (p *partScheduler) remove(r *writeReq) {
	i := slices.Index(p.bulk, r)
	p.bulk = slices.Delete(p.bulk, i, i+1)
	if p.next > i {
		p.next--
	}
}

// adapt sizes the next bursts by how long the last write of parts took.
func (p *partScheduler) adapt(took int64, frameSize int) {
	switch {
	case took < int64(burstFast):
		p.burst = min(2*p.burst, bulkBurst)
	case took > int64(burstSlow):
		p.burst = frameSize
	}
}
