// SPDX-License-Identifier: MIT

package tcpconn

import (
	"testing"
	"time"
)

// TestReadTokenNoWaitTriesOneCallInSixteenAfterFourMisses checks that a
// receiver with a context tries every call until four tries in a row found
// nothing, and from then on only one call in 16 tries.
func TestReadTokenNoWaitTriesOneCallInSixteenAfterFourMisses(t *testing.T) {
	for _, tc := range []struct {
		misses int
		tries  int // of 32 calls
	}{
		{misses: 0, tries: 32},
		{misses: 3, tries: 32},
		{misses: 4, tries: 2},
		{misses: 20, tries: 2},
	} {
		var tok readToken
		tok.init()
		for range tc.misses {
			tok.noWaitRead(false)
		}
		var tries, last, gap int
		for i := range 32 {
			if tok.noWaitWorth() {
				if tries > 0 {
					gap = i - last
				}
				tries, last = tries+1, i
			}
		}
		if tries != tc.tries {
			t.Errorf("after %d misses: %d of 32 calls try, want %d", tc.misses, tries, tc.tries)
		}
		if tc.tries == 2 && gap != 16 {
			t.Errorf("after %d misses: tries %d calls apart, want 16", tc.misses, gap)
		}
	}
}

// TestReadTokenNoWaitReadThatFindsSomethingRestoresEveryCall checks that
// one read that finds something ends the one-in-16 rationing.
func TestReadTokenNoWaitReadThatFindsSomethingRestoresEveryCall(t *testing.T) {
	var tok readToken
	tok.init()
	for range 5 {
		tok.noWaitRead(false)
	}
	tok.noWaitRead(true)
	for i := range 20 {
		if !tok.noWaitWorth() {
			t.Fatalf("call %d after a read found something does not try", i)
		}
	}
	for range 3 { // three misses are not yet a run
		tok.noWaitRead(false)
	}
	if !tok.noWaitWorth() {
		t.Fatal("three misses after a find already ration the tries")
	}
}

// TestReadTokenKickNeverBlocksAndKeepsOnePending checks that kicks on a
// background reader that does not wait never block, and that exactly one
// of them stays pending until it is taken.
func TestReadTokenKickNeverBlocksAndKeepsOnePending(t *testing.T) {
	var tok readToken
	tok.init()
	if cap(tok.kick) != 1 {
		t.Fatalf("init: kick capacity %d, want 1", cap(tok.kick))
	}
	done := make(chan struct{})
	go func() {
		for range 3 {
			tok.kickBackground()
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("kickBackground blocks with a kick pending")
	}
	if n := len(tok.kick); n != 1 {
		t.Fatalf("%d kicks pending after three, want 1", n)
	}
	<-tok.kick
	if n := len(tok.kick); n != 0 {
		t.Fatalf("%d kicks pending once taken, want 0", n)
	}
	tok.kickBackground()
	if n := len(tok.kick); n != 1 {
		t.Fatalf("a kick after the last was taken: %d pending, want 1", n)
	}
}
