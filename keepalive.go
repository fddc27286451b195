// SPDX-License-Identifier: MIT

package tcpconn

import (
	"fmt"
	"sync"
	"time"
)

// keepAlive runs a link's keepalive and unclaimed-ID expiry from a runtime
// timer rather than a goroutine, so an idle link costs no goroutine for
// them. The timer re-arms itself at the end of each tick, so ticks never
// overlap; mu guards the fields against stop (link.fail).
type keepAlive struct {
	mu        sync.Mutex // orders a tick against stop
	t         *time.Timer
	stopped   bool
	tick      time.Duration
	lastSeen  uint64
	lastHeard time.Time
	lastPing  time.Time
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
	if seen := l.framesIn.Load(); seen != k.lastSeen {
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
// the pace windows grow at). Sent after silence, and once when the peer's
// HELLO arrives.
func (l *link) ping() {
	seq := l.pingSeq.Add(1)
	l.pingSent.Store(nanotime())
	l.enqueueControl(appendValueControl(nil, framePing, seq))
}
