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
	pings     uint32
}

func (l *link) startKeepAlive() {
	interval := l.cfg.KeepAliveInterval
	if interval <= 0 {
		interval = time.Hour
	}
	// A quarter-interval tick measures silence to within a tick, so a dead
	// peer is noticed within KeepAliveTimeout plus half an interval (a tick
	// of a whole interval made that up to two intervals late).
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
	var ping uint32
	if l.cfg.KeepAliveInterval > 0 && silent < l.cfg.KeepAliveTimeout &&
		silent >= l.cfg.KeepAliveInterval && now.Sub(k.lastPing) >= l.cfg.KeepAliveInterval-k.tick/2 {
		k.lastPing = now
		k.pings++
		ping = k.pings
	}
	k.mu.Unlock()

	if l.cfg.KeepAliveInterval > 0 && silent >= l.cfg.KeepAliveTimeout {
		l.fail(fmt.Errorf("%w: nothing heard for %v", ErrKeepAliveTimeout, silent.Round(time.Millisecond)))
		return
	}
	if ping != 0 {
		l.pingSeq.Store(ping)
		l.pingSent.Store(nanotime())
		l.enqueueControl(appendValueControl(nil, framePing, ping))
	}
	l.expireUnclaimed(now)
	k.mu.Lock()
	if !k.stopped {
		k.t.Reset(k.tick)
	}
	k.mu.Unlock()
}
