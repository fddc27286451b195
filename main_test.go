// SPDX-License-Identifier: MIT

package tcpconn

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if any goroutine outlives the tests (no goroutine
// outlives its connections). Nothing is ignored: every test
// closes its Connections, listeners and raw sockets, and the library's
// link goroutines end once their socket is closed; goleak retries for a
// while, which covers links that finish closing just after a test returns.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
