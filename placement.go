// SPDX-License-Identifier: MIT

package tcpconn

import (
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
