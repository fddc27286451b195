// SPDX-License-Identifier: MIT

package tcpconn

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
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
	l.reading.br = newFrameReader(l.conn, nil)
	l.reading.br.progress = &l.keepAlive.heard // as newLink sets it
	l.reading.pend = pendingData{active: true, end: 10, total: 10, m: message{data: make([]byte, 10)}}
	for range 3 {
		if _, err := l.readPending(); !isTimeout(err) {
			t.Fatalf("readPending = %v, want the read's timeout (resumable)", err)
		}
	}
	if n := l.keepAlive.heard.Load(); n != 0 {
		t.Fatalf("3 reads that timed out with nothing counted as hearing the peer %d times", n)
	}
}

// TestWriteFailureNamesThePeersClose: a write that finds the peer gone
// (EPIPE) is the link lost and, like a read that finds it, io.EOF; other
// write errors are the link lost only.
func TestWriteFailureNamesThePeersClose(t *testing.T) {
	for _, tc := range []struct {
		name    string
		err     error
		wantEOF bool
	}{
		{"broken pipe", &net.OpError{Op: "writev", Net: "tcp", Err: os.NewSyscallError("writev", syscall.EPIPE)}, true},
		{"reset", &net.OpError{Op: "writev", Net: "tcp", Err: os.NewSyscallError("writev", syscall.ECONNRESET)}, false},
		{"deadline", os.ErrDeadlineExceeded, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := writeFailure(tc.err)
			if !errors.Is(err, ErrLinkLost) || !errors.Is(err, tc.err) {
				t.Errorf("%v: want ErrLinkLost wrapping %v", err, tc.err)
			}
			if errors.Is(err, io.EOF) != tc.wantEOF {
				t.Errorf("%v: errors.Is(io.EOF) = %v, want %v", err, !tc.wantEOF, tc.wantEOF)
			}
		})
	}
}
