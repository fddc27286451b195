// SPDX-License-Identifier: MIT

package tcpconn

import "time"

// controlLimiter is a token bucket for the control frames a peer makes us
// handle (pings, stray WINDOWs, resets of unclaimed IDs): rate per second
// (Config.MaxControlFramesPerSecond, passed in so that the link does not
// keep it twice), with a burst equal to the rate, as the HTTP/2 flood
// fixes did. It belongs to the read token's holder.
type controlLimiter struct {
	tokens float64
	last   time.Time
}

func (c *controlLimiter) init(rate int, now time.Time) {
	c.tokens, c.last = float64(rate), now
}

// allow charges one frame at now against rate per second; false: the
// peer floods.
func (c *controlLimiter) allow(now time.Time, rate int) bool {
	r := float64(rate)
	c.tokens = min(r, c.tokens+now.Sub(c.last).Seconds()*r)
	c.last = now
	if c.tokens < 1 {
		return false
	}
	c.tokens--
	return true
}
