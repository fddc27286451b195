// SPDX-License-Identifier: MIT

//go:build race

package tcpconn

// raceEnabled: the race detector instruments allocations, so allocation
// counts are meaningless under it.
const raceEnabled = true
