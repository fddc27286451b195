// SPDX-License-Identifier: MIT

package tcpconn

import (
	"math"
	"math/rand/v2"
)

// Placement: which endpoint of a fleet a logical connection goes to.
//
// A named ID goes by rendezvous (highest random weight) hashing: every
// endpoint gets a weight from hash(ID, endpoint) and the heaviest healthy
// one wins. When one of n endpoints leaves, only the IDs it won move (each
// to its own runner-up), and they come back when it returns: per-ID state
// on the server stays warm across membership changes, which a ring or a
// modulo would not give without virtual nodes or mass moves.
//
// Hashing alone spreads IDs as a binomial does: at 100 IDs per endpoint
// the busiest of 20 holds about 1.25x the mean. So a named ID's share is
// bounded ("consistent hashing with bounded loads", Mirrokni, Thorup and
// Zadimoghaddam 2018): an endpoint holding Config.PlacementBalance times
// the mean is full, and an ID whose first choice is full takes the next
// one in its own rendezvous order. The bound moves only the IDs above it
// (about 1 % at 1.1x), each to its own runner-up.
//
// A catch-all or an ID-less connection has no key to keep; it goes by the
// power of two choices: the less loaded of two endpoints drawn at random,
// which keeps the busiest endpoint near the mean without the herd a
// "least loaded" pick sends to a new endpoint.

// rendezvousWeight is the weight of endpoint for id: FNV-1a of each,
// combined through splitmix64's finalizer so that weights of one ID over
// similar addresses are independent. It is the same in every process, so
// clients that share a fleet put an ID on the same endpoint.
func rendezvousWeight(id, endpoint string) uint64 {
	return mix64(mix64(fnv1a(id)) ^ fnv1a(endpoint))
}

func fnv1a(s string) uint64 {
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= prime
	}
	return h
}

func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// rendezvous returns the index of the heaviest candidate for id among
// those ok accepts, or -1 if it accepts none.
func rendezvous(id string, endpoints []string, ok func(int) bool) int {
	best, bestW := -1, uint64(0)
	for i, e := range endpoints {
		if !ok(i) {
			continue
		}
		if w := rendezvousWeight(id, e); best < 0 || w > bestW {
			best, bestW = i, w
		}
	}
	return best
}

// twoChoices returns the less loaded of two distinct random candidates
// among those ok accepts (the one if only one is), or -1 if none is.
func twoChoices(n int, ok func(int) bool, load func(int) int64) int {
	var cand []int
	for i := range n {
		if ok(i) {
			cand = append(cand, i)
		}
	}
	switch len(cand) {
	case 0:
		return -1
	case 1:
		return cand[0]
	}
	a := rand.N(len(cand))
	b := rand.N(len(cand) - 1)
	if b >= a {
		b++
	}
	if load(cand[b]) < load(cand[a]) {
		return cand[b]
	}
	return cand[a]
}

// capacity is how many named IDs an endpoint may hold when total of them
// spread over n endpoints: balance times the mean, rounded up, so that
// every ID fits (n·capacity >= total), and never less than
// placementSlack above the mean.
func capacity(balance float64, total, n int) float64 {
	if n == 0 {
		return 0
	}
	mean := float64(total) / float64(n)
	// 1e-9: 1.1 × 100 is 110.00000000000001 in binary floating point.
	return max(math.Ceil(balance*mean-1e-9), math.Ceil(mean)+placementSlack)
}

// placementSlack: the busiest of 20 endpoints holds about 2.5 standard
// deviations above the mean, 8 IDs at a mean of 10. Below that the
// spread is noise that a bound would chase: while a fleet's first IDs
// arrive it would push many off their first choice, to places that
// differ from client to client and that they leave again as links age.
const placementSlack = 8

// idPlacements counts where a fleet's named Connections are placed: the
// load the bound compares. A Connection counts at its latest placement
// from the moment it is chosen (so that IDs placed at once see each
// other) until it closes; one that moves counts at its new place.
// Guarded by fleet.mu. Close closes Connection.closed before it takes
// fleet.mu to forget, so a placement that checks closed under fleet.mu
// never counts a closed Connection again.
type idPlacements struct {
	at   map[*Connection]string
	load map[string]int
}

// set counts c at addr (and no longer where it was).
func (p *idPlacements) set(c *Connection, addr string) {
	if p.at == nil {
		p.at, p.load = make(map[*Connection]string), make(map[string]int)
	}
	if old, ok := p.at[c]; ok {
		p.drop(old)
	}
	p.at[c] = addr
	p.load[addr]++
}

// forget stops counting c.
func (p *idPlacements) forget(c *Connection) {
	if old, ok := p.at[c]; ok {
		delete(p.at, c)
		p.drop(old)
	}
}

func (p *idPlacements) drop(addr string) {
	if p.load[addr]--; p.load[addr] == 0 {
		delete(p.load, addr)
	}
}

// loadOf returns the load at addr, not counting c.
func (p *idPlacements) loadOf(addr string, c *Connection) int {
	if p.at[c] == addr {
		return p.load[addr] - 1
	}
	return p.load[addr]
}

// total returns how many Connections are counted, c aside.
func (p *idPlacements) total(c *Connection) int {
	if _, ok := p.at[c]; ok {
		return len(p.at) - 1
	}
	return len(p.at)
}
