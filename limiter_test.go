// SPDX-License-Identifier: MIT

package tcpconn

import (
	"testing"
	"time"
)

// TestControlLimiterAllowsABurstOfRateThenRefuses checks that a peer may
// send rate control frames at once, and that the next one is refused.
func TestControlLimiterAllowsABurstOfRateThenRefuses(t *testing.T) {
	for _, rate := range []int{1, 4, 1000} {
		t0 := time.Unix(1000, 0)
		var c controlLimiter
		c.init(rate, t0)
		for i := range rate {
			if !c.allow(t0, rate) {
				t.Fatalf("rate %d: frame %d of the burst refused", rate, i+1)
			}
		}
		if c.allow(t0, rate) {
			t.Errorf("rate %d: frame %d at once allowed", rate, rate+1)
		}
	}
}

// TestControlLimiterRefillsAtRatePerSecond checks that after a burst,
// frames are allowed again at rate per second, never more than rate at
// once however long the peer was quiet.
func TestControlLimiterRefillsAtRatePerSecond(t *testing.T) {
	const rate = 4 // a token every 250 ms, exact in floating point
	for _, tc := range []struct {
		after time.Duration
		want  int
	}{
		{0, 0},
		{200 * time.Millisecond, 0},
		{250 * time.Millisecond, 1},
		{750 * time.Millisecond, 3},
		{time.Second, rate},
		{time.Hour, rate},
	} {
		t0 := time.Unix(1000, 0)
		var c controlLimiter
		c.init(rate, t0)
		for range rate {
			c.allow(t0, rate)
		}
		now := t0.Add(tc.after)
		got := 0
		for c.allow(now, rate) {
			got++
			if got > 10*rate {
				break
			}
		}
		if got != tc.want {
			t.Errorf("%v after a burst: %d frames allowed, want %d", tc.after, got, tc.want)
		}
	}
}

// TestControlLimiterRefusedFramesCostNothing checks that a flood refused
// frame by frame does not push the next allowed frame further away.
func TestControlLimiterRefusedFramesCostNothing(t *testing.T) {
	const rate = 4
	t0 := time.Unix(1000, 0)
	var c controlLimiter
	c.init(rate, t0)
	for range rate {
		c.allow(t0, rate)
	}
	const step = time.Second / 64 // a sixteenth of a token, exact in floating point
	for i := range 16 {
		if c.allow(t0.Add(time.Duration(i)*step), rate) {
			t.Fatalf("allowed %v after the burst, before a token refilled", time.Duration(i)*step)
		}
	}
	if !c.allow(t0.Add(16*step), rate) {
		t.Fatal("refused 250 ms after the burst: the refused frames were charged")
	}
}
