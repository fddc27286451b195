// SPDX-License-Identifier: MIT

package tcpconn

import (
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// faultProxy is a loopback TCP proxy between a client and a server that
// injects faults: every write split into 1-byte pieces, random delays, a cut
// (FIN) or reset (RST, linger 0) after a given number of client-to-server
// bytes, and a black hole that silently drops everything in both directions
// without closing anything. Faults are switched at run time; each accepted
// pair of sockets is a proxyPair.
type faultProxy struct {
	t      testing.TB
	ln     net.Listener
	target string

	fragment  atomic.Bool                   // write every byte separately
	maxDelay  atomic.Int64                  // ns: random delay before each forwarded chunk
	blackhole atomic.Bool                   // drop everything, close nothing
	cutNext   atomic.Int64                  // the next accepted pair is cut after this many client->server bytes
	cutReset  atomic.Bool                   // cut with RST (linger 0) instead of FIN
	smallBuf  atomic.Bool                   // small SO_RCVBUF on the client side of a pair to be cut, so large writes stay in progress
	rate      atomic.Int64                  // bytes per second forwarded client->server, 0: unlimited (a slow path; small SO_RCVBUF so little waits in flight)
	gate      atomic.Pointer[chan struct{}] // non-nil: client->server bytes wait until it closes (pauseUp)

	mu    sync.Mutex
	pairs []*proxyPair
	wg    sync.WaitGroup

	accepted atomic.Int64 // pairs accepted
	cuts     atomic.Int64 // pairs cut by cutNext
	up, down atomic.Int64 // bytes forwarded client->server, server->client
	dropped  atomic.Int64 // bytes swallowed by the black hole
}

type proxyPair struct {
	client, server *net.TCPConn
	cutAt          int64 // 0: never
	once           sync.Once
}

// newFaultProxy listens on 127.0.0.1 and forwards to target; it is closed,
// with every pair, at cleanup.
func newFaultProxy(t testing.TB, target string) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{t: t, ln: ln, target: target}
	p.wg.Add(1)
	go p.acceptLoop()
	t.Cleanup(p.close)
	return p
}

func (p *faultProxy) Addr() string { return p.ln.Addr().String() }

// pauseUp holds client->server bytes in the proxy until resumeUp; what is
// in flight beyond it still arrives.
func (p *faultProxy) pauseUp() {
	gate := make(chan struct{})
	p.gate.Store(&gate)
}

func (p *faultProxy) resumeUp() {
	if gate := p.gate.Swap(nil); gate != nil {
		close(*gate)
	}
}

func (p *faultProxy) close() {
	p.resumeUp()
	p.ln.Close()
	p.killAll(false)
	p.wg.Wait()
}

func (p *faultProxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.DialTimeout("tcp", p.target, testTimeout)
		if err != nil {
			c.Close()
			continue
		}
		cc, sc := c.(*net.TCPConn), s.(*net.TCPConn)
		pr := &proxyPair{client: cc, server: sc, cutAt: p.cutNext.Swap(0)}
		if pr.cutAt > 0 && p.smallBuf.Load() || p.rate.Load() > 0 {
			cc.SetReadBuffer(16 << 10)
		}
		p.mu.Lock()
		p.pairs = append(p.pairs, pr)
		p.mu.Unlock()
		p.accepted.Add(1)
		p.wg.Add(2)
		go p.pump(pr, sc, cc, true)
		go p.pump(pr, cc, sc, false)
	}
}

// pump copies src to dst, applying the faults in force.
func (p *faultProxy) pump(pr *proxyPair, dst, src *net.TCPConn, up bool) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	if p.rate.Load() > 0 {
		buf = buf[:4<<10] // a steady trickle, not 32 KiB bursts
	}
	var sent int64
	for {
		n, err := src.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			if p.blackhole.Load() {
				p.dropped.Add(int64(n))
				chunk = nil
			}
			cut := false
			if up && pr.cutAt > 0 && sent+int64(len(chunk)) >= pr.cutAt {
				chunk, cut = chunk[:pr.cutAt-sent], true
			}
			if d := p.maxDelay.Load(); d > 0 && len(chunk) > 0 {
				time.Sleep(time.Duration(rand.Int64N(d))) // injected delay, not synchronization
			}
			if gate := p.gate.Load(); up && gate != nil {
				<-*gate
			}
			if r := p.rate.Load(); up && r > 0 {
				time.Sleep(time.Duration(int64(len(chunk)) * int64(time.Second) / r)) // injected slowness, not synchronization
			}
			if werr := p.write(dst, chunk); werr != nil {
				pr.kill(false)
				return
			}
			sent += int64(len(chunk))
			if up {
				p.up.Add(int64(len(chunk)))
			} else {
				p.down.Add(int64(len(chunk)))
			}
			if cut {
				p.cuts.Add(1)
				pr.kill(p.cutReset.Load())
				return
			}
		}
		if err != nil {
			if !p.blackhole.Load() { // a black hole forwards no FIN or RST either
				pr.kill(false)
			}
			return
		}
	}
}

func (p *faultProxy) write(dst *net.TCPConn, b []byte) error {
	if !p.fragment.Load() {
		_, err := dst.Write(b)
		return err
	}
	for i := range b {
		if _, err := dst.Write(b[i : i+1]); err != nil {
			return err
		}
	}
	return nil
}

// kill closes both sockets of the pair, with RST if reset.
func (pr *proxyPair) kill(reset bool) {
	pr.once.Do(func() {
		if reset {
			pr.client.SetLinger(0)
			pr.server.SetLinger(0)
		}
		pr.client.Close()
		pr.server.Close()
	})
}

// killAll cuts every pair accepted so far.
func (p *faultProxy) killAll(reset bool) {
	p.mu.Lock()
	pairs := p.pairs
	p.pairs = nil
	p.mu.Unlock()
	for _, pr := range pairs {
		pr.kill(reset)
	}
}
