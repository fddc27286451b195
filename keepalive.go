// SPDX-License-Identifier: MIT

package tcpconn

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// keepAlive runs a link's keepalive and unclaimed-ID expiry from a runtime
// timer rather than a goroutine, so an idle link costs no goroutine for
// them. The timer re-arms itself at the end of each tick, so ticks never
// overlap; mu guards the fields against stop (link.fail).
type keepAlive struct {
	heard atomic.Uint64 // frames heard from the peer: anything counts as alive

	// The round trip, measured by PING/PONG: the last one and the
	// smallest (queueing inflates the others), in nanoseconds.
	rtt, minRTT atomic.Int64
	pingSent    atomic.Int64  // nanotime of the PING in flight, 0 if none
	pingSeq     atomic.Uint32 // its value
	ponged      atomic.Uint32 // the value of the last PING answered

	mu        sync.Mutex // orders a tick against stop; guards the fields below
	t         *time.Timer
	stopped   bool
	tick      time.Duration
	lastSeen  uint64
	lastHeard time.Time
	lastPing  time.Time
}

// nextPing returns the value of a new PING and notes when it left.
func (k *keepAlive) nextPing(now int64) uint32 {
	seq := k.pingSeq.Add(1)
	k.pingSent.Store(now)
	return seq
}

// pong records the round trip of the PING in flight if seq is its value,
// and reports whether it was.
func (k *keepAlive) pong(seq uint32, now int64) bool {
	sent := k.pingSent.Load()
	if sent == 0 || seq != k.pingSeq.Load() || !k.pingSent.CompareAndSwap(sent, 0) {
		return false
	}
	k.ponged.Store(seq)
	rtt := now - sent
	k.rtt.Store(rtt)
	if m := k.minRTT.Load(); m == 0 || rtt < m {
		k.minRTT.Store(rtt)
	}
	return true
}

func (l *link) startKeepAlive() {
	interval := l.cfg.KeepAliveInterval
	if interval <= 0 {
		interval = time.Hour
	}
	// A quarter-interval tick measures silence to within a tick, so a dead
	// peer is noticed within KeepAliveTimeout plus half an interval (a tick
	// of a whole interval would make that up to two intervals late).
	tick := min(interval/4, max(l.cfg.IdleTimeout/4, time.Second))
	if l.cfg.IdleTimeout <= 0 {
		tick = interval / 4
	}
	k := &l.keepAlive
	k.tick, k.lastHeard = tick, time.Now()
	k.mu.Lock()
	k.t = time.AfterFunc(tick, l.keepAliveTick)
	k.mu.Unlock()
}

func (k *keepAlive) stop() {
	k.mu.Lock()
	k.stopped = true
	if k.t != nil {
		k.t.Stop()
	}
	k.mu.Unlock()
}

func (l *link) keepAliveTick() {
	k := &l.keepAlive
	now := time.Now()
	k.mu.Lock()
	if k.stopped {
		k.mu.Unlock()
		return
	}
	if seen := k.heard.Load(); seen != k.lastSeen {
		k.lastSeen, k.lastHeard = seen, now
	}
	silent := now.Sub(k.lastHeard)
	ping := l.cfg.KeepAliveInterval > 0 && silent < l.cfg.KeepAliveTimeout &&
		silent >= l.cfg.KeepAliveInterval && now.Sub(k.lastPing) >= l.cfg.KeepAliveInterval-k.tick/2
	if ping {
		k.lastPing = now
	}
	k.mu.Unlock()

	if l.cfg.KeepAliveInterval > 0 && silent >= l.cfg.KeepAliveTimeout {
		l.fail(fmt.Errorf("%w: nothing heard for %v", ErrKeepAliveTimeout, silent.Round(time.Millisecond)))
		return
	}
	if d := l.laneSilence(now); l.cfg.KeepAliveInterval > 0 && d >= l.cfg.KeepAliveTimeout {
		l.fail(fmt.Errorf("%w: messages announced for the bulk lane, and nothing of them on it for %v", ErrKeepAliveTimeout, d.Round(time.Millisecond)))
		return
	}
	if ping {
		l.ping()
	}
	l.expireUnclaimed(now)
	k.mu.Lock()
	if !k.stopped {
		k.t.Reset(k.tick)
	}
	k.mu.Unlock()
}

// ping sends a PING; its PONG measures the round trip (LinkStats.RTT, and
// the pace windows grow at). Sent after silence, once when the peer's
// HELLO arrives, and behind a draining GOAWAY (goAwayDraining). It
// returns the PING's value.
func (l *link) ping() uint32 {
	seq := l.keepAlive.nextPing(nanotime())
	l.enqueueControl(appendValueControl(nil, framePing, seq))
	return seq
}

// pongedSince reports whether the peer answered the PING of value seq, or
// one sent after it (only the latest PING's PONG is matched).
func (l *link) pongedSince(seq uint32) bool {
	return int32(l.keepAlive.ponged.Load()-seq) >= 0
}
