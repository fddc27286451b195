// SPDX-License-Identifier: MIT

package tcpconn

import (
	"bufio"
	"context"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// attacker is a raw-socket hostile peer: it says a valid HELLO and then
// writes whatever frames a test builds, without the library's rules. A
// background reader drains (or, with noRead, ignores) what the server sends.
type attacker struct {
	t    testing.TB
	conn *net.TCPConn
	w    *bufio.Writer
	gone chan struct{} // closed when the server closed the socket (read side)
	wg   sync.WaitGroup
	in   atomic.Int64 // bytes received from the server
}

// dialAttacker connects to address; with noRead it never reads and shrinks
// its receive buffer so that the server's replies back up.
func dialAttacker(t testing.TB, address string, noRead bool) *attacker {
	t.Helper()
	d := net.Dialer{Timeout: testTimeout}
	if noRead {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			return rc.Control(func(fd uintptr) {
				setRcvBuf(fd, 4<<10)
			})
		}
	}
	c, err := d.Dial("tcp", address)
	if err != nil {
		t.Fatal(err)
	}
	a := &attacker{t: t, conn: c.(*net.TCPConn), gone: make(chan struct{})}
	a.w = bufio.NewWriterSize(a.conn, 64<<10)
	if !noRead {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			defer close(a.gone)
			buf := make([]byte, 64<<10)
			for {
				n, err := a.conn.Read(buf)
				a.in.Add(int64(n))
				if err != nil {
					return
				}
			}
		}()
	}
	t.Cleanup(func() {
		a.conn.SetLinger(0)
		a.conn.Close()
		a.wg.Wait()
	})
	a.raw(helloBytes(nil))
	return a
}

// raw queues bytes; a write error (the server hung up) is reported by flush.
func (a *attacker) raw(bs ...[]byte) {
	for _, b := range bs {
		a.w.Write(b)
	}
}

func (a *attacker) data(id string, payload []byte) {
	a.raw(dataFrame(id, string(payload)))
}

// flush writes what was queued; it returns false once the server is gone.
func (a *attacker) flush() bool {
	a.conn.SetWriteDeadline(time.Now().Add(testTimeout))
	return a.w.Flush() == nil
}

// serverLink returns the Listener's link for this attacker's socket.
func (a *attacker) serverLink(ln *Listener) *link {
	a.t.Helper()
	local := a.conn.LocalAddr().String()
	var found *link
	eventually(a.t, "the server's link for the attacker", func() bool {
		ln.mu.Lock()
		defer ln.mu.Unlock()
		for l := range ln.links {
			if l.conn.RemoteAddr().String() == local {
				found = l
				return true
			}
		}
		return false
	})
	return found
}

// waitLinkErr waits until l fails and returns its error.
func waitLinkErr(t testing.TB, l *link) error {
	t.Helper()
	select {
	case <-l.done:
		return l.err
	case <-time.After(testTimeout):
		t.Fatal("the attacked link was never closed")
		return nil
	}
}

// heapWatch samples the heap while an attack runs and reports its
// high-water mark above the level measured (after a GC) at the start.
type heapWatch struct {
	base uint64
	peak atomic.Uint64
	stop chan struct{}
	done chan struct{}
}

func watchHeap() *heapWatch {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	h := &heapWatch{base: ms.HeapAlloc, stop: make(chan struct{}), done: make(chan struct{})}
	h.peak.Store(ms.HeapAlloc)
	go func() {
		defer close(h.done)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > h.peak.Load() {
				h.peak.Store(ms.HeapAlloc)
			}
			select {
			case <-h.stop:
				return
			case <-t.C:
			}
		}
	}()
	return h
}

// end stops sampling and returns the high-water mark above the start.
func (h *heapWatch) end() uint64 {
	close(h.stop)
	<-h.done
	if p := h.peak.Load(); p > h.base {
		return p - h.base
	}
	return 0
}

// bystander keeps round trips going on its own link while an attack runs;
// stop returns how many succeeded and fails the test on any error.
type bystander struct {
	n    atomic.Int64
	err  atomic.Pointer[error]
	stop chan struct{}
	done chan struct{}
}

func startBystander(t testing.TB, address string) *bystander {
	t.Helper()
	c := mustDial(t, address, WithID("bystander"), WithConfig(&Config{}))
	mustRoundTrip(t, c, []byte("hello"))
	b := &bystander{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		msg := pattern(1000, 9)
		for {
			select {
			case <-b.stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			err := roundTrip(ctx, c, msg)
			cancel()
			if err != nil {
				b.err.Store(&err)
				return
			}
			b.n.Add(1)
		}
	}()
	return b
}

func (b *bystander) end(t testing.TB) int64 {
	t.Helper()
	close(b.stop)
	<-b.done
	if e := b.err.Load(); e != nil {
		t.Errorf("the bystander's link failed: %v", *e)
	}
	if b.n.Load() == 0 {
		t.Error("the bystander made no round trip during the attack")
	}
	return b.n.Load()
}
