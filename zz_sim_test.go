package tcpconn

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"
)

func TestZZSim2(t *testing.T) {
	for _, bal := range []float64{1.1, 1.15} {
		const n, ids = 25, 2000
		f := &fleet{cfg: &Config{PlacementBalance: bal}}
		addrs := fleetAddrs(n)
		up := make([]bool, n)
		for i := range 20 {
			up[i] = true
		}
		conns := make([]*Connection, ids)
		for i := range conns {
			conns[i] = &Connection{id: fmt.Sprint("id-", i), closed: make(chan struct{})}
		}
		place := func(c *Connection, up []bool) {
			i, _ := f.placeNamedLocked(c, addrs, up, nil)
			f.placed.set(c, addrs[i])
		}
		same := func(a map[*Connection]string) float64 {
			k := 0
			for c, x := range a {
				if f.placed.at[c] == x {
					k++
				}
			}
			return float64(k) / float64(len(a))
		}
		round := func(up []bool) {
			for _, j := range rand.Perm(ids) {
				place(conns[j], up)
			}
		}
		for _, c := range conns {
			place(c, up)
		}
		round(up)
		for i := 20; i < 25; i++ {
			up[i] = true
		}
		round(up)
		round(up)
		for i := range 5 {
			up[i] = false
		}
		for _, c := range conns {
			for i := range 5 {
				if f.placed.at[c] == addrs[i] {
					place(c, up)
				}
			}
		}
		prev := maps.Clone(f.placed.at)
		var drift []float64
		for range 4 {
			round(up)
			drift = append(drift, same(prev))
		}
		t.Logf("bal %.2f: drift after drain over rounds %.3f", bal, drift)
	}
}
