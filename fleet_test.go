// SPDX-License-Identifier: MIT

package tcpconn

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestFleetSpread: IDs spread over the replicas of an SRV target with no
// replica above the load bound, nearly all of them on their rendezvous
// endpoint; with the bound off every ID is.
func TestFleetSpread(t *testing.T) {
	const replicas, ids = 10, 1000
	f := newTestFleet(t, replicas, nil)
	for _, tc := range []struct {
		name     string
		balance  float64
		maxAway  float64 // share of IDs off their rendezvous endpoint
		maxRatio float64 // busiest over mean
	}{
		{"bounded", 0, 0.05, DefaultPlacementBalance},
		{"hash", math.Inf(1), 0, 1.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := f.client(Config{PlacementBalance: tc.balance})
			conns := openIDs(t, cl, f.target, ids)
			addrs := f.addrs()
			count := map[string]int{}
			away := 0
			for id, at := range placements(conns) {
				if at != home(id, addrs) {
					away++
				}
				count[at]++
			}
			mean := float64(ids) / replicas
			for at, n := range count {
				if float64(n) > tc.maxRatio*mean {
					t.Errorf("%s holds %d IDs, mean %.0f", at, n, mean)
				}
			}
			if float64(away) > tc.maxAway*ids {
				t.Errorf("%d of %d IDs off their rendezvous endpoint", away, ids)
			}
			if got := len(cl.Links()); got != replicas {
				t.Errorf("%d links, want one per replica (%d)", got, replicas)
			}
			for _, ls := range cl.Links() {
				if !slices.Contains(addrs, ls.Endpoint) {
					t.Errorf("LinkStats.Endpoint = %q, not a replica", ls.Endpoint)
				}
			}
		})
	}
}

// TestFleetCatchAllsSpread: ID-less connections go by two choices: with as
// many catch-alls as replicas, each replica gets one (a link holds one).
func TestFleetCatchAllsSpread(t *testing.T) {
	const replicas = 3
	f := newTestFleet(t, replicas, nil)
	cl := f.client(Config{})
	seen := map[string]bool{}
	for range replicas {
		c := closeAtCleanup(t, cl.Open(f.target))
		mustRoundTrip(t, c, []byte("x"))
		seen[c.RemoteAddr().String()] = true
	}
	if len(seen) != replicas {
		t.Fatalf("catch-alls on %d replicas, want %d", len(seen), replicas)
	}
}

// TestFleetReplicaLost: a killed replica's IDs answer elsewhere (each on
// its rendezvous runner-up) and the others stay put; brought back, its IDs
// return to it when their links age out (MaxLinkAge). Placement by hash
// alone, so that each ID's place is known (TestBoundedPlacement covers
// the same with the bound).
func TestFleetReplicaLost(t *testing.T) {
	const replicas, ids = 5, 200
	f := newTestFleet(t, replicas, &Config{MaxLinkAge: 300 * time.Millisecond, MaxLinkAgeGrace: time.Second})
	cl := f.client(Config{PlacementBalance: math.Inf(1)})
	conns := openIDs(t, cl, f.target, ids)
	addrs := f.addrs()
	before := placements(conns)
	lost := addrs[2]
	f.kill(lost)

	// Only IDs of the lost replica may fail, once each (the round trip in
	// flight), within a bounded time; the next one answers elsewhere.
	failed := 0
	for _, c := range conns {
		err := within(t, testTimeout, "a round trip after the loss", func() error {
			return roundTrip(testContext(t), c, []byte("after"))
		})
		if err != nil {
			if before[c.ID()] != lost {
				t.Fatalf("%s was on %s, not on the lost replica: %v", c.ID(), before[c.ID()], err)
			}
			failed++
			mustRoundTrip(t, c, []byte("again"))
		}
	}
	t.Logf("%d round trips failed with the replica", failed)
	eventually(t, "the lost replica ejected", func() bool { return f.sawEvent(EndpointEjected, lost) })
	rest := slices.DeleteFunc(slices.Clone(addrs), func(a string) bool { return a == lost })
	eventually(t, "IDs placed without the lost replica", func() bool {
		for _, c := range conns {
			mustRoundTrip(t, c, []byte("x"))
		}
		for id, at := range placements(conns) {
			if before[id] != lost && at != before[id] || before[id] == lost && at != home(id, rest) {
				return false
			}
		}
		return true
	})

	f.start(lost)
	eventually(t, "95% of IDs back where they were", func() bool {
		for _, c := range conns {
			mustRoundTrip(t, c, []byte("y"))
		}
		same := 0
		for id, at := range placements(conns) {
			if at == before[id] {
				same++
			}
		}
		return same >= ids*95/100
	})
}

// TestFleetScaleUp: replicas added to DNS are found by the periodic
// lookup; new IDs go to them, and existing ones follow when their links
// age out. Placement by hash alone, so that each ID's place is known.
func TestFleetScaleUp(t *testing.T) {
	f := newTestFleet(t, 2, &Config{MaxLinkAge: 300 * time.Millisecond, MaxLinkAgeGrace: time.Second})
	cl := f.client(Config{PlacementBalance: math.Inf(1)})
	conns := openIDs(t, cl, f.target, 100)
	f.start("127.0.0.1:0")
	f.start("127.0.0.1:0")
	f.publish()
	addrs := f.addrs()
	eventually(t, "the new replicas resolved", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return slices.ContainsFunc(f.events, func(ev LinkEvent) bool {
			return ev.Kind == EndpointsResolved && slices.Equal(ev.Endpoints, addrs)
		})
	})
	c := closeAtCleanup(t, cl.Open(f.target, WithID("new")))
	mustRoundTrip(t, c, []byte("x"))
	if at, want := c.RemoteAddr().String(), home("new", addrs); at != want {
		t.Fatalf("a new ID on %s, rendezvous says %s", at, want)
	}
	eventually(t, "existing IDs on their place among 4 replicas", func() bool {
		for _, c := range conns {
			mustRoundTrip(t, c, []byte("y"))
		}
		for id, at := range placements(conns) {
			if at != home(id, addrs) {
				return false
			}
		}
		return true
	})
}

// TestFleetPlannedDrain: while every ID and two catch-alls (the seed's
// NewConnection) do round trips, replicas drain (Shutdown, or links past
// MaxLinkAge): no message is lost and no call returns an error.
func TestFleetPlannedDrain(t *testing.T) {
	for _, tc := range []struct {
		name   string
		srvCfg *Config
		drain  func(f *testFleet, addrs []string) error
		n      int // replicas drained
	}{
		// IDs leaving one replica may land on another that is starting
		// to drain too: they move again.
		{name: "Shutdown", n: 2, drain: func(f *testFleet, addrs []string) error {
			errs := make(chan error, len(addrs))
			for _, a := range addrs {
				go func() { errs <- f.shutdown(a) }()
			}
			var err error
			for range addrs {
				err = errors.Join(err, <-errs)
			}
			return err
		}},
		{name: "MaxLinkAge", srvCfg: &Config{MaxLinkAge: 100 * time.Millisecond, MaxLinkAgeGrace: 5 * time.Second},
			n: 1, drain: func(f *testFleet, _ []string) error {
				// Every link ages; wait for a few generations of them.
				eventually(f.t, "links replaced after their age", func() bool {
					f.mu.Lock()
					defer f.mu.Unlock()
					n := 0
					for _, ev := range f.events {
						if ev.Kind == LinkGoAway && ev.Draining {
							n++
						}
					}
					return n >= 3*len(f.replicas)
				})
				return nil
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const replicas, ids = 4, 80
			f := newTestFleet(t, replicas, tc.srvCfg)
			cl := f.client(Config{})
			conns := openIDs(t, cl, f.target, ids)
			for range 2 {
				c := closeAtCleanup(t, cl.Open(f.target))
				mustRoundTrip(t, c, []byte("hello"))
				conns = append(conns, c)
			}
			var stop atomic.Bool
			var trips atomic.Int64
			errs := make(chan error, len(conns))
			var wg sync.WaitGroup
			for _, c := range conns {
				wg.Go(func() {
					for i := 0; !stop.Load(); i++ {
						ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
						err := roundTrip(ctx, c, fmt.Appendf(nil, "%s #%d", c.ID(), i))
						cancel()
						if err != nil {
							errs <- fmt.Errorf("%s round trip %d: %w", c.ID(), i, err)
							return
						}
						trips.Add(1)
					}
				})
			}
			drained := f.addrs()[:tc.n]
			start := trips.Load()
			eventually(t, "round trips under way", func() bool { return trips.Load() > start+ids })
			if err := tc.drain(f, drained); err != nil {
				t.Errorf("drain: %v", err)
			}
			mid := trips.Load()
			eventually(t, "round trips after the drain", func() bool { return trips.Load() > mid+2*ids })
			stop.Store(true)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			for _, a := range drained {
				if !f.sawEvent(LinkGoAway, a) {
					t.Errorf("no LinkGoAway event for %s", a)
				}
			}
			if n := cl.Stats().Reconnects; n != 0 {
				t.Errorf("%d reconnects: a link was lost, not drained", n)
			}
			if tc.name == "Shutdown" {
				for _, c := range conns {
					if at := c.RemoteAddr(); at != nil && slices.Contains(drained, at.String()) {
						t.Errorf("%q still on the drained replica", c.ID())
					}
				}
			}
		})
	}
}

// TestFleetResolverFailureKeepsLinks: lookups that fail or find nothing
// keep the last good set and every working link.
func TestFleetResolverFailureKeepsLinks(t *testing.T) {
	f := newTestFleet(t, 3, nil)
	cl := f.client(Config{})
	conns := openIDs(t, cl, f.target, 30)
	links := len(cl.Links())
	for _, breakDNS := range []func(){
		func() { f.dns.fail.Store(true) },
		func() { f.dns.fail.Store(false); f.dns.setSRV(f.name) },
	} {
		breakDNS()
		q := f.dns.queries.Load()
		eventually(t, "failed lookups", func() bool { return f.dns.queries.Load() > q+3 && f.sawEvent(ResolveFailed, "") })
		for _, c := range conns {
			mustRoundTrip(t, c, []byte("still here"))
		}
		c := closeAtCleanup(t, cl.Open(f.target, WithID("late")))
		mustRoundTrip(t, c, []byte("new ID, old set"))
		c.Close()
		if got := len(cl.Links()); got != links {
			t.Fatalf("%d links after failed lookups, had %d", got, links)
		}
	}
}

// TestFleetBadTargets: malformed targets fail at once naming the target;
// an unresolvable name fails Dial with ErrResolve and each call of an
// Open'd Connection after a new lookup.
func TestFleetBadTargets(t *testing.T) {
	d := newDNSServer(t)
	cl, err := NewClient(&Config{Resolver: DNSResolver{Resolver: d.resolver()}, ResolveInterval: 200 * time.Millisecond, ReconnectBackoffMax: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := testContext(t)
	for _, tc := range []struct {
		target string
		want   error
	}{
		{"dns://host:1", ErrInvalidTarget},
		{"dns:///host", ErrInvalidTarget},
		{"list:///a:1,b", ErrInvalidTarget},
		{"zk:///svc", ErrInvalidTarget},
		{"dns:///nosuch.test:7000", ErrResolve},
		{"srv:///_x._tcp.nosuch.test", ErrResolve},
	} {
		_, err := cl.Dial(ctx, tc.target)
		if !errors.Is(err, tc.want) {
			t.Errorf("Dial(%q) = %v, want %v", tc.target, err, tc.want)
		}
		if errors.Is(tc.want, ErrInvalidTarget) && !contains(err, tc.target) {
			t.Errorf("Dial(%q): %v does not name the target", tc.target, err)
		}
	}

	c := cl.Open("dns:///nosuch.test:7000", WithID("x"))
	defer c.Close()
	for range 2 {
		q := d.queries.Load()
		wantErr(t, c.SendContext(ctx, []byte("x")), ErrResolve)
		if d.queries.Load() == q {
			t.Fatal("Send failed without a new lookup")
		}
	}
}

func contains(err error, s string) bool {
	return err != nil && strings.Contains(err.Error(), s)
}

// TestFleetEndsWithItsLastConnection: the lookup loop of a target stops
// when the last Connection to it closes, and the target is forgotten.
func TestFleetEndsWithItsLastConnection(t *testing.T) {
	f := newTestFleet(t, 1, nil)
	cl := f.client(Config{})
	conns := openIDs(t, cl, f.target, 2)
	cl.fleetMu.Lock()
	fl := cl.fleets[poolKey{f.target, nil}]
	cl.fleetMu.Unlock()
	if fl == nil {
		t.Fatal("no fleet for the target")
	}
	conns[0].Close()
	if isClosed(fl.done) {
		t.Fatal("the loop ended while a Connection still uses the target")
	}
	fl.mu.Lock()
	_, counted := fl.placed.at[conns[0]]
	load, total := fl.placed.loadOf(f.addrs()[0], nil), fl.placed.total(nil)
	fl.mu.Unlock()
	if counted || load != 1 || total != 1 {
		t.Fatalf("after one of two closed: closed one counted %v, load %d, total %d", counted, load, total)
	}
	conns[1].Close()
	eventually(t, "the lookup loop to end", func() bool { return isClosed(fl.done) })
	cl.fleetMu.Lock()
	defer cl.fleetMu.Unlock()
	if len(cl.fleets) != 0 {
		t.Fatalf("%d fleets left", len(cl.fleets))
	}
}

// TestFleetAllDown: with every replica gone, calls fail promptly (each
// endpoint is tried at most once per call), and succeed again once one is
// back.
func TestFleetAllDown(t *testing.T) {
	f := newTestFleet(t, 3, nil)
	cl := f.client(Config{})
	c := openIDs(t, cl, f.target, 1)[0]
	addrs := f.addrs()
	for _, a := range addrs {
		f.kill(a)
	}
	for range 3 {
		err := within(t, 5*time.Second, "a round trip with every replica down", func() error {
			return roundTrip(testContext(t), c, []byte("x"))
		})
		if err == nil {
			t.Fatal("a round trip succeeded with every replica down")
		}
	}
	f.start(addrs[1])
	eventuallyRoundTrip(t, c, []byte("back"))
}
