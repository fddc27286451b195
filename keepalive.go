// SPDX-License-Identifier: MIT

package tcpconn

import (
	"fmt"
	"time"
)

func (l *link) keepAliveLoop() {
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
	t := time.NewTicker(tick)
	defer t.Stop()
	lastSeen, lastHeard := l.framesIn.Load(), time.Now()
	var pings uint32
	var lastPing time.Time
	for {
		select {
		case <-l.done:
			return
		case now := <-t.C:
			if seen := l.framesIn.Load(); seen != lastSeen {
				lastSeen, lastHeard = seen, now
			}
			if l.cfg.KeepAliveInterval > 0 {
				silent := now.Sub(lastHeard)
				if silent >= l.cfg.KeepAliveTimeout {
					l.fail(fmt.Errorf("%w: nothing heard for %v", ErrKeepAliveTimeout, silent.Round(time.Millisecond)))
					return
				}
				if silent >= l.cfg.KeepAliveInterval && now.Sub(lastPing) >= l.cfg.KeepAliveInterval-tick/2 {
					lastPing = now
					pings++
					l.pingSeq.Store(pings)
					l.pingSent.Store(nanotime())
					l.enqueueControl(appendValueControl(nil, framePing, pings))
				}
			}
			l.expireUnclaimed(now)
		}
	}
}
