// SPDX-License-Identifier: MIT

package tcpconn

import (
	"errors"
	"slices"
	"sync"
	"testing"
)

func TestLinkEventKindString(t *testing.T) {
	for k, want := range map[LinkEventKind]string{
		LinkUp: "LinkUp", LinkGoAway: "LinkGoAway", LinkLost: "LinkLost", EndpointEjected: "EndpointEjected",
		EndpointsResolved: "EndpointsResolved", ResolveFailed: "ResolveFailed", 0: "LinkEventKind(0)", 99: "LinkEventKind(99)",
	} {
		if got := k.String(); got != want {
			t.Errorf("%d: %q, want %q", int(k), got, want)
		}
	}
}

// TestLinkEventsOfOneAddress: a plain address reports its link up, the
// server's draining GOAWAY and the loss, each naming the endpoint and the
// link.
func TestLinkEventsOfOneAddress(t *testing.T) {
	ln, err := Listen("tcp", "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	serveListener(t, ln, echoLoop)
	var mu sync.Mutex
	var events []LinkEvent
	cl, err := NewClient(&Config{OnLinkEvent: func(ev LinkEvent) {
		mu.Lock()
		events = append(events, ev)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	c := closeAtCleanup(t, cl.Open(ln.Addr().String(), WithID("a")))
	mustRoundTrip(t, c, []byte("x"))
	shut := async(func() error { return ln.Shutdown(testContext(t)) })
	kinds := func() []LinkEventKind {
		mu.Lock()
		defer mu.Unlock()
		var out []LinkEventKind
		for _, ev := range events {
			out = append(out, ev.Kind)
		}
		return out
	}
	// With one address there is nowhere to move: the Connection stays
	// until it closes, and Shutdown waits for it.
	eventually(t, "LinkUp, LinkGoAway", func() bool {
		return slices.Equal(kinds(), []LinkEventKind{LinkUp, LinkGoAway})
	})
	c.Close()
	if err := await(t, shut, testTimeout, "Shutdown"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "LinkUp, LinkGoAway, LinkLost", func() bool {
		return slices.Equal(kinds(), []LinkEventKind{LinkUp, LinkGoAway, LinkLost})
	})
	mu.Lock()
	defer mu.Unlock()
	for _, ev := range events {
		if ev.Endpoint != ln.Addr().String() || ev.LinkID != events[0].LinkID {
			t.Errorf("%v: endpoint %q, link %q; want %q, %q", ev.Kind, ev.Endpoint, ev.LinkID, ln.Addr(), events[0].LinkID)
		}
	}
	if !events[1].Draining {
		t.Error("the GOAWAY of Shutdown is not draining")
	}
	if !errors.Is(events[2].Err, ErrLinkLost) && !errors.Is(events[2].Err, ErrClosed) {
		t.Errorf("LinkLost with %v", events[2].Err)
	}
}
