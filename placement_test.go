// SPDX-License-Identifier: MIT

package tcpconn

import (
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func fleetAddrs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("10.0.0.%d:7000", i+1)
	}
	return out
}

func allOK(int) bool { return true }

// TestRendezvousSpreadAndStability: IDs spread evenly; removing one of 20
// endpoints moves only its IDs, and they all return with it.
func TestRendezvousSpreadAndStability(t *testing.T) {
	const n, ids = 20, 20000
	eps := fleetAddrs(n)
	before := make([]int, ids)
	count := make([]int, n)
	for i := range ids {
		before[i] = rendezvous(fmt.Sprint("id-", i), eps, allOK)
		count[before[i]]++
	}
	mean := float64(ids) / n
	for i, c := range count {
		if float64(c) > 1.15*mean {
			t.Errorf("endpoint %d holds %d IDs, mean %.0f", i, c, mean)
		}
	}
	const lost = 7
	moved := 0
	for i := range ids {
		got := rendezvous(fmt.Sprint("id-", i), eps, func(j int) bool { return j != lost })
		if before[i] == lost {
			if got == lost || got < 0 {
				t.Fatalf("id-%d stayed on the lost endpoint", i)
			}
			moved++
		} else if got != before[i] {
			t.Fatalf("id-%d moved from %d to %d though its endpoint stayed", i, before[i], got)
		}
	}
	if moved != count[lost] {
		t.Fatalf("%d IDs moved, the lost endpoint held %d", moved, count[lost])
	}
	if got := rendezvous("x", eps, func(int) bool { return false }); got != -1 {
		t.Fatalf("no candidate: got %d", got)
	}
}

func TestTwoChoices(t *testing.T) {
	const n = 10
	load := make([]int64, n)
	for range 10000 {
		load[twoChoices(n, allOK, func(i int) int64 { return load[i] })]++
	}
	var hi int64
	for _, l := range load {
		hi = max(hi, l)
	}
	if float64(hi) > 1.15*1000 {
		t.Errorf("busiest holds %d, mean 1000: %v", hi, load)
	}
	for _, tc := range []struct {
		ok   func(int) bool
		want int
	}{
		{ok: func(int) bool { return false }, want: -1},
		{ok: func(i int) bool { return i == 3 }, want: 3},
	} {
		if got := twoChoices(n, tc.ok, func(int) int64 { return 0 }); got != tc.want {
			t.Errorf("got %d, want %d", got, tc.want)
		}
	}
}

func TestCapacity(t *testing.T) {
	for _, tc := range []struct {
		balance  float64
		total, n int
		want     float64
	}{
		{1.1, 2000, 20, 110}, // 1.1 × 100 is 110.00000000000001 in floating point
		{1.1, 2001, 20, 111},
		{1.1, 200, 5, 48},  // the slack: 40 + 8 > 44
		{1.1, 0, 5, 8},     // an empty fleet takes IDs
		{1.5, 100, 1, 150}, // one endpoint: every ID fits
		{math.Inf(1), 10, 3, math.Inf(1)},
		{1.1, 10, 0, 0},
	} {
		if got := capacity(tc.balance, tc.total, tc.n); got != tc.want {
			t.Errorf("capacity(%v, %d, %d) = %v, want %v", tc.balance, tc.total, tc.n, got, tc.want)
		}
	}
}

func TestIDPlacementsCount(t *testing.T) {
	var p idPlacements
	a, b := &Connection{}, &Connection{}
	p.set(a, "x")
	p.set(b, "x")
	if load, total := p.loadOf("x", a), p.total(a); load != 1 || total != 1 {
		t.Fatalf("load at x and total, a aside: %d, %d; want 1, 1", load, total)
	}
	p.set(a, "y") // a moved
	if p.load["x"] != 1 || p.load["y"] != 1 {
		t.Fatalf("loads after a move: %v", p.load)
	}
	p.forget(a)
	p.forget(a) // twice is harmless
	p.forget(b)
	if len(p.at) != 0 || len(p.load) != 0 {
		t.Fatalf("after forgetting all: at %v, load %v", p.at, p.load)
	}
}

// TestBoundedPlacement drives a fleet's placement as a Client does, 2,000
// IDs over 20 endpoints (one by one, then placed again in random order as
// links age): no endpoint above the bound, few IDs off their first choice,
// placing again moves almost nothing, an endpoint's IDs find room when it
// is lost, and after it returns nearly every ID is where it was.
func TestBoundedPlacement(t *testing.T) {
	const n, ids = 20, 2000
	f := &fleet{cfg: &Config{PlacementBalance: DefaultPlacementBalance}}
	addrs := fleetAddrs(n)
	all := make([]bool, n)
	for i := range all {
		all[i] = true
	}
	conns := make([]*Connection, ids)
	for i := range conns {
		conns[i] = &Connection{id: fmt.Sprint("id-", i), closed: make(chan struct{})}
	}
	place := func(c *Connection, up []bool) {
		i, healthy := f.placeNamedLocked(c, addrs, up, nil)
		if i < 0 || !healthy || !up[i] {
			t.Fatalf("%s placed on %d (healthy %v)", c.id, i, healthy)
		}
		f.placed.set(c, addrs[i])
	}
	again := func(up []bool) {
		for _, j := range rand.Perm(ids) {
			place(conns[j], up)
		}
	}
	snapshot := func() map[*Connection]string { return maps.Clone(f.placed.at) }
	kept := func(before map[*Connection]string) (same int) {
		for c, at := range before {
			if f.placed.at[c] == at {
				same++
			}
		}
		return same
	}
	check := func(phase string, maxAway float64) {
		t.Helper()
		limit := DefaultPlacementBalance * ids / n
		away := 0
		for c, at := range f.placed.at {
			if at != home(c.id, addrs) {
				away++
			}
		}
		for at, load := range f.placed.load {
			if float64(load) > limit {
				t.Errorf("%s: %s holds %d, bound %.0f", phase, at, load, limit)
			}
		}
		if float64(away) > maxAway*ids {
			t.Errorf("%s: %d IDs off their first choice", phase, away)
		}
	}

	for _, c := range conns {
		place(c, all)
	}
	check("placed one by one", 0.05)
	again(all)
	check("placed again", 0.02)
	settled := snapshot()
	again(all)
	if same := kept(settled); same < ids*99/100 {
		t.Fatalf("placing again moved %d IDs", ids-same)
	}
	settled = snapshot()

	const lost = 3
	down := slices.Clone(all)
	down[lost] = false
	for _, c := range conns {
		if f.placed.at[c] == addrs[lost] {
			place(c, down)
		}
	}
	for at, load := range f.placed.load {
		if limit := capacity(DefaultPlacementBalance, ids, n); float64(load) > limit || at == addrs[lost] {
			t.Errorf("without endpoint %d: %s holds %d, bound %.0f", lost, at, load, limit)
		}
	}
	again(all)
	if same := kept(settled); same < ids*95/100 {
		t.Errorf("after the endpoint returned, %d of %d IDs where they were", same, ids)
	}
}
