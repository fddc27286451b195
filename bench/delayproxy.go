package bench

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// delayProxy stands for a wide-area path on 127.0.0.1: it forwards each
// accepted socket to target and holds every byte, in each direction, for
// oneWay (half the round-trip time) before writing it on. Bandwidth is not
// limited: a reader per direction takes whatever the kernel has as soon as
// it arrives and notes its release time; a writer per direction sleeps
// only until the oldest arrival is due, then writes everything due by then
// in one writev. So a bulk flow pipelines through the delay instead of paying
// it per read, and nothing sleeps per byte.
//
// The proxy ends both loopback TCP connections itself, so the kernel's
// congestion control and socket buffers never see the delay: a flow is
// limited only by what its protocol keeps in flight per round trip (its
// flow-control window) and by the proxy's queue (proxyMaxQueued). That is
// the point: the benchmark measures the multiplexers' windows, the way a
// well-tuned long-distance TCP path would expose them.
type delayProxy struct {
	ln     net.Listener
	target string
	oneWay time.Duration

	mu     sync.Mutex
	conns  []net.Conn
	closed bool
	wg     sync.WaitGroup
}

// newDelayProxy listens on 127.0.0.1 and forwards to target with the
// given one-way delay.
func newDelayProxy(target string, oneWay time.Duration) (*delayProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &delayProxy{ln: ln, target: target, oneWay: oneWay}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr is where clients dial instead of target.
func (p *delayProxy) Addr() string { return p.ln.Addr().String() }

// track remembers c so that Close can end it; false if the proxy is closed.
func (p *delayProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns = append(p.conns, c)
	return true
}

func (p *delayProxy) acceptLoop() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		if !p.track(client) || !p.track(server) {
			client.Close()
			server.Close()
			return
		}
		p.wg.Add(2)
		go p.pipe(client, server)
		go p.pipe(server, client)
	}
}

// Close stops accepting, closes every forwarded socket and waits for the
// proxy's goroutines.
func (p *delayProxy) Close() error {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	err := p.ln.Close()
	for _, c := range conns {
		c.Close()
	}
	p.wg.Wait()
	return err
}

// delayLine is the queue of one direction: a ring of bytes the reader
// fills and the writer empties, and the arrivals in it (one per read) with
// their release times. Positions count bytes since the start, so an
// arrival is just where it ends. The ring starts small and doubles while a
// flow needs more room, up to proxyMaxQueued; a full ring holds the
// reader, which pushes back on the sender through TCP.
type delayLine struct {
	mu       sync.Mutex
	cond     sync.Cond
	ring     []byte
	base     int64 // position stored at ring[0]
	head     int64 // first byte not yet written on
	tail     int64 // one past the last byte read
	arrivals []arrival
	closed   bool // the reader is done: EOF, or the socket failed
	eof      bool // it ended with a clean EOF, to be passed on as a FIN
	failed   bool // the writer gave up
}

// arrival is one read: the bytes up to end are due for writing at due.
type arrival struct {
	end int64
	due time.Time
}

const (
	// proxyMaxQueued bounds the bytes held per direction: generous, so
	// that the proxy is not what limits a flow (it caps one at
	// proxyMaxQueued / oneWay: 2.7 GB/s at a 100 ms round trip, above what
	// the machine forwards on loopback), and bounded, so that a sender
	// that outruns it is pushed back instead of growing the heap.
	proxyMaxQueued = 128 << 20
	// proxyMinRing is where a ring starts: a direction that carries only
	// acknowledgements and window updates never needs more.
	proxyMinRing = 256 << 10
	// proxyMaxRead bounds one read, so a read is released while the next
	// one is still arriving rather than all at once.
	proxyMaxRead = 1 << 20
)

func newDelayLine() *delayLine {
	dl := &delayLine{}
	dl.cond.L = &dl.mu
	return dl
}

// pipe forwards src to dst with the delay: this goroutine reads, a second
// one writes. It returns when both are done.
func (p *delayProxy) pipe(src, dst net.Conn) {
	defer p.wg.Done()
	dl := newDelayLine()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if !p.writeLoop(dl, dst) {
			// dst failed: nothing more can be delivered, so end both ways.
			src.Close()
			dst.Close()
		}
	}()
	p.readLoop(dl, src)
	<-done
}

func (p *delayProxy) readLoop(dl *delayLine, src net.Conn) {
	for {
		space := dl.space()
		if space == nil {
			return
		}
		n, err := src.Read(space)
		if n > 0 {
			dl.commit(n, time.Now().Add(p.oneWay))
		}
		if err != nil {
			dl.end(errors.Is(err, io.EOF))
			return
		}
	}
}

// space waits for free room in the ring, growing it if the flow has
// filled it and it may still grow, and returns the contiguous free part
// after tail (at most proxyMaxRead). It returns nil if the writer gave up.
func (dl *delayLine) space() []byte {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	for !dl.failed {
		used := int(dl.tail - dl.head)
		if used == len(dl.ring) && len(dl.ring) < proxyMaxQueued {
			dl.grow()
		}
		if used < len(dl.ring) {
			at := int(dl.tail-dl.base) % len(dl.ring)
			end := len(dl.ring) // free up to the end, and on from 0 to head
			if h := int(dl.head-dl.base) % len(dl.ring); h > at {
				end = h // free up to head only
			}
			return dl.ring[at:min(end, at+proxyMaxRead)]
		}
		dl.cond.Wait()
	}
	return nil
}

// grow doubles the ring (or makes the first one), copying the bytes not
// yet written to its start.
func (dl *delayLine) grow() {
	size := min(max(2*len(dl.ring), proxyMinRing), proxyMaxQueued)
	ring := make([]byte, size)
	n := 0
	for _, piece := range dl.pending(dl.tail) {
		n += copy(ring[n:], piece)
	}
	dl.ring, dl.base = ring, dl.head
}

// pending returns the ring's bytes from head up to end, in one or two
// pieces (the second when they wrap around).
func (dl *delayLine) pending(end int64) [][]byte {
	if end == dl.head {
		return nil
	}
	from := int(dl.head-dl.base) % len(dl.ring)
	to := from + int(end-dl.head)
	if to <= len(dl.ring) {
		return [][]byte{dl.ring[from:to]}
	}
	return [][]byte{dl.ring[from:], dl.ring[:to-len(dl.ring)]}
}

// commit records that n bytes were read into the space returned last.
func (dl *delayLine) commit(n int, due time.Time) {
	dl.mu.Lock()
	dl.tail += int64(n)
	dl.arrivals = append(dl.arrivals, arrival{dl.tail, due})
	dl.cond.Broadcast()
	dl.mu.Unlock()
}

func (dl *delayLine) end(eof bool) {
	dl.mu.Lock()
	dl.closed, dl.eof = true, eof
	dl.cond.Broadcast()
	dl.mu.Unlock()
}

func (dl *delayLine) fail() {
	dl.mu.Lock()
	dl.failed = true
	dl.cond.Broadcast()
	dl.mu.Unlock()
}

// next waits for the oldest arrival and returns when it is due; ok is false
// once the reader has ended and everything was written, eof then says
// whether it ended with a clean EOF.
func (dl *delayLine) next() (due time.Time, ok, eof bool) {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	for len(dl.arrivals) == 0 && !dl.closed {
		dl.cond.Wait()
	}
	if len(dl.arrivals) == 0 {
		return time.Time{}, false, dl.eof
	}
	return dl.arrivals[0].due, true, false
}

// due returns the bytes of every arrival that is due at now, oldest
// first. They stay in the ring, which the reader may not overwrite, until
// done.
func (dl *delayLine) due(now time.Time) (pieces [][]byte, end int64) {
	dl.mu.Lock()
	defer dl.mu.Unlock()
	end = dl.head
	i := 0
	for ; i < len(dl.arrivals) && !dl.arrivals[i].due.After(now); i++ {
		end = dl.arrivals[i].end
	}
	dl.arrivals = dl.arrivals[i:]
	if len(dl.arrivals) == 0 {
		dl.arrivals = dl.arrivals[:0:0] // let the backing array go once drained
	}
	return dl.pending(end), end
}

// done frees the ring up to end.
func (dl *delayLine) done(end int64) {
	dl.mu.Lock()
	dl.head = end
	dl.cond.Broadcast()
	dl.mu.Unlock()
}

// writeLoop writes each arrival when it is due, together with every other
// one due by then. Once the reader has ended and everything is written,
// it passes a clean EOF on as a FIN, or closes dst after a failed read. It
// returns false if dst failed.
func (p *delayProxy) writeLoop(dl *delayLine, dst net.Conn) bool {
	for {
		due, ok, eof := dl.next()
		if !ok {
			if tc, isTCP := dst.(*net.TCPConn); eof && isTCP {
				tc.CloseWrite()
			} else {
				dst.Close()
			}
			return true
		}
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		pieces, end := dl.due(time.Now())
		bufs := net.Buffers(pieces)
		_, err := bufs.WriteTo(dst)
		dl.done(end)
		if err != nil {
			dl.fail()
			return false
		}
	}
}
