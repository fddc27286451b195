// SPDX-License-Identifier: MIT

package tcpconn

import "testing"

// TestPartSchedulerBudgetIsOneFrameWhileSmallMessagesAreAbout checks that
// a write carries one frame of parts while a small message was queued
// within smallQuiet, and otherwise the burst, never less than a frame.
func TestPartSchedulerBudgetIsOneFrameWhileSmallMessagesAreAbout(t *testing.T) {
	const frame, now = 64 << 10, int64(1e9)
	for _, tc := range []struct {
		name    string
		smallAt int64
		burst   int
		want    int
	}{
		{"small just now", now, 8 * frame, frame},
		{"small smallQuiet ago", now - int64(smallQuiet), 8 * frame, frame},
		{"quiet", now - int64(smallQuiet) - 1, 8 * frame, 8 * frame},
		{"quiet, burst below a frame", 0, frame / 2, frame},
	} {
		p := partScheduler{smallAt: tc.smallAt, burst: tc.burst}
		if got := p.budget(frame, now); got != tc.want {
			t.Errorf("%s: budget %d, want %d", tc.name, got, tc.want)
		}
	}
}

// TestPartSchedulerRoundRobinWrapsAround checks that skip passes the turn
// to each message in the order added, and from the last back to the first.
func TestPartSchedulerRoundRobinWrapsAround(t *testing.T) {
	a, b, c := &writeReq{}, &writeReq{}, &writeReq{}
	var p partScheduler
	for _, r := range []*writeReq{a, b, c} {
		p.add(r)
	}
	for i, want := range []*writeReq{a, b, c, a, b} {
		if p.current() != want {
			t.Fatalf("turn %d: wrong message", i)
		}
		p.skip()
	}
}

// TestPartSchedulerRemoveKeepsTheTurn checks that removing a message
// before, at or after the one whose turn it is leaves the turn with the
// same message, or passes it to the next when that one is removed.
func TestPartSchedulerRemoveKeepsTheTurn(t *testing.T) {
	for _, tc := range []struct {
		name         string
		next, remove int // indexes into a, b, c, d
		want         int
	}{
		{"before", 2, 0, 2},
		{"at", 2, 2, 3},
		{"after", 2, 3, 2},
		{"at the last", 3, 3, 0},
		{"the first at the first", 0, 0, 1},
	} {
		reqs := []*writeReq{{}, {}, {}, {}}
		var p partScheduler
		for _, r := range reqs {
			p.add(r)
		}
		p.next = tc.next
		p.remove(reqs[tc.remove])
		if len(p.bulk) != 3 {
			t.Fatalf("%s: %d messages left, want 3", tc.name, len(p.bulk))
		}
		if p.current() != reqs[tc.want] {
			t.Errorf("%s: the turn went to the wrong message, want index %d", tc.name, tc.want)
		}
	}
}

// TestPartSchedulerAdaptSizesTheBurstByWriteTime checks that a fast write
// doubles the burst up to bulkBurst, a slow one resets it to a frame, and
// one in between leaves it.
func TestPartSchedulerAdaptSizesTheBurstByWriteTime(t *testing.T) {
	const frame = 64 << 10
	for _, tc := range []struct {
		name  string
		burst int
		took  int64
		want  int
	}{
		{"fast", frame, int64(burstFast) - 1, 2 * frame},
		{"fast, near the cap", 3 * bulkBurst / 4, 0, bulkBurst},
		{"fast, at the cap", bulkBurst, 0, bulkBurst},
		{"burstFast exactly", 4 * frame, int64(burstFast), 4 * frame},
		{"between", 4 * frame, int64(burstFast+burstSlow) / 2, 4 * frame},
		{"burstSlow exactly", 4 * frame, int64(burstSlow), 4 * frame},
		{"slow", bulkBurst, int64(burstSlow) + 1, frame},
	} {
		p := partScheduler{burst: tc.burst}
		p.adapt(tc.took, frame)
		if p.burst != tc.want {
			t.Errorf("%s: burst %d -> %d, want %d", tc.name, tc.burst, p.burst, tc.want)
		}
	}
}
