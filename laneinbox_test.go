// SPDX-License-Identifier: MIT

package tcpconn

import (
	"sync/atomic"
	"testing"
	"time"
)

// TestLaneInboxMatchesInOrderPerID: each ID's announcements are taken in
// the order they came, whatever other IDs do.
func TestLaneInboxMatchesInOrderPerID(t *testing.T) {
	var in laneInbox
	a1, b1, a2 := &laneMessage{id: "a", total: 1}, &laneMessage{id: "b", total: 2}, &laneMessage{id: "a", total: 3}
	for _, lm := range []*laneMessage{a1, b1, a2} {
		in.announce(lm)
	}
	done := make(chan struct{})
	for _, want := range []*laneMessage{a1, b1, a2} {
		got, err := in.front(want.id, done, new(atomic.Int32))
		if err != nil || got != want {
			t.Fatalf("front(%q) = %+v, %v; want %+v", want.id, got, err, want)
		}
		if !in.finish(got) {
			t.Fatalf("finish(%+v) = false", got)
		}
	}
	if !in.empty() {
		t.Fatal("not empty after every message finished")
	}
}

// TestLaneInboxWaitsForTheAnnouncement: bytes that came before their BULK
// wait for it, and the link's end stops the wait.
func TestLaneInboxWaitsForTheAnnouncement(t *testing.T) {
	var in laneInbox
	done := make(chan struct{})
	got := make(chan *laneMessage, 1)
	go func() {
		lm, _ := in.front("late", done, new(atomic.Int32))
		got <- lm
	}()
	lm := &laneMessage{id: "late", total: 5}
	in.announce(&laneMessage{id: "other"})
	in.announce(lm)
	select {
	case g := <-got:
		if g != lm {
			t.Fatalf("front = %+v, want %+v", g, lm)
		}
	case <-time.After(testTimeout):
		t.Fatal("front did not return once its message was announced")
	}
	go func() {
		_, err := in.front("never", done, new(atomic.Int32))
		got <- &laneMessage{id: err.Error()}
	}()
	close(done)
	select {
	case g := <-got:
		if g.id != ErrClosed.Error() {
			t.Fatalf("front after the link's end: %q, want ErrClosed", g.id)
		}
	case <-time.After(testTimeout):
		t.Fatal("front did not return at the link's end")
	}
}

// TestLaneInboxAbandonTakesEverything: a failed link's announcements are
// all given up at once, and a message finishing after that knows it.
func TestLaneInboxAbandonTakesEverything(t *testing.T) {
	var in laneInbox
	a, b := &laneMessage{id: "a"}, &laneMessage{id: "b"}
	in.announce(a)
	in.announce(b)
	if got := in.abandon(); len(got) != 2 {
		t.Fatalf("abandon returned %d messages, want 2", len(got))
	}
	if in.finish(a) {
		t.Fatal("finish of an abandoned message reported true")
	}
	if !in.empty() {
		t.Fatal("not empty after abandon")
	}
}
