// SPDX-License-Identifier: MIT

//go:build !race

package tcpconn

// raceEnabled: see race_on_test.go.
const raceEnabled = false
