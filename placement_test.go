// SPDX-License-Identifier: MIT

package tcpconn

import (
	"fmt"
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
