// SPDX-License-Identifier: MIT

package tcpconn

import (
	"net"
	"os"
	"testing"
)

// timeoutConn is a net.Conn whose reads always time out having read
// nothing (a receiver's read interrupted by its deadline on a silent link).
type timeoutConn struct{ net.Conn }

func (timeoutConn) Read([]byte) (int, error) { return 0, os.ErrDeadlineExceeded }

// TestTimedOutReadIsNotHearingThePeer: a payload read cut short by a
// deadline, with no byte read, does not count as hearing the peer, so it
// cannot postpone keepalive's detection of a dead one; a byte that did
// arrive counts.
func TestTimedOutReadIsNotHearingThePeer(t *testing.T) {
	l := &link{conn: timeoutConn{}, cfg: DefaultConfig()}
	l.br = newFrameReader(l.conn, nil)
	l.pend = pendingData{active: true, end: 10, total: 10, m: message{data: make([]byte, 10)}}
	for range 3 {
		if _, err := l.readPending(); !isTimeout(err) {
			t.Fatalf("readPending = %v, want the read's timeout (resumable)", err)
		}
	}
	if n := l.framesIn.Load(); n != 0 {
		t.Fatalf("3 reads that timed out with nothing counted as hearing the peer %d times", n)
	}
}
