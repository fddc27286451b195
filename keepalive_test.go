// SPDX-License-Identifier: MIT

package tcpconn

import "testing"

// TestKeepAlivePongMeasuresOnlyThePingInFlight checks that a PONG records
// the round trip only when it answers the PING in flight, once, and that a
// stale, repeated, unknown or unsolicited PONG changes nothing.
func TestKeepAlivePongMeasuresOnlyThePingInFlight(t *testing.T) {
	type step struct {
		ping bool   // send a PING at now; else a PONG
		seq  uint32 // the PONG's value: 1 is the first PING's
		now  int64
		ok   bool // pong's answer
	}
	for _, tc := range []struct {
		name        string
		steps       []step
		rtt, minRTT int64
	}{
		{"answered", []step{{ping: true, now: 1000}, {seq: 1, now: 1500, ok: true}}, 500, 500},
		{"answered twice", []step{{ping: true, now: 1000}, {seq: 1, now: 1500, ok: true}, {seq: 1, now: 1900}}, 500, 500},
		{"stale", []step{{ping: true, now: 1000}, {ping: true, now: 2000}, {seq: 1, now: 2100}, {seq: 2, now: 2600, ok: true}}, 600, 600},
		{"unknown value", []step{{ping: true, now: 1000}, {seq: 7, now: 1100}}, 0, 0},
		{"no PING", []step{{seq: 0, now: 1000}, {seq: 1, now: 1000}}, 0, 0},
		{"answered, then another", []step{{ping: true, now: 1000}, {seq: 1, now: 1400, ok: true}, {ping: true, now: 5000}, {seq: 2, now: 5900, ok: true}}, 900, 400},
	} {
		var k keepAlive
		for i, s := range tc.steps {
			if s.ping {
				if seq := k.nextPing(s.now); seq == 0 {
					t.Fatalf("%s: step %d: PING value 0", tc.name, i)
				}
				continue
			}
			if ok := k.pong(s.seq, s.now); ok != s.ok {
				t.Errorf("%s: step %d: pong(%d) = %v, want %v", tc.name, i, s.seq, ok, s.ok)
			}
		}
		if rtt, m := k.rtt.Load(), k.minRTT.Load(); rtt != tc.rtt || m != tc.minRTT {
			t.Errorf("%s: rtt %d, minRTT %d; want %d, %d", tc.name, rtt, m, tc.rtt, tc.minRTT)
		}
	}
}

// TestKeepAliveMinRTTKeepsTheSmallest checks that the smallest round trip
// is kept while the last one follows every answered PING.
func TestKeepAliveMinRTTKeepsTheSmallest(t *testing.T) {
	var k keepAlive
	now := int64(1e9)
	for _, rtt := range []int64{500, 300, 800, 300, 900} {
		seq := k.nextPing(now)
		now += rtt
		if !k.pong(seq, now) {
			t.Fatalf("the PONG of PING %d was refused", seq)
		}
		if k.rtt.Load() != rtt {
			t.Fatalf("rtt %d, want the last, %d", k.rtt.Load(), rtt)
		}
	}
	if m := k.minRTT.Load(); m != 300 {
		t.Fatalf("minRTT %d, want 300", m)
	}
}
