package bench

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

// Kind is the shape of a workload.
type Kind int

const (
	// RTT: each logical connection does echo round trips (Send, Receive).
	RTT Kind = iota
	// SendOnly: the client sends back to back; the server drains, checks and
	// signals after the last one, so the time includes delivery.
	SendOnly
	// RecvOnly: the client asks once; the server pushes back to back.
	RecvOnly
	// Memory: Conns idle logical connections on one socket; reports heap
	// bytes and goroutines per connection, then times 16-byte round trips
	// spread over all of them.
	Memory
	// Mixed: on one socket, connection 0 does 1 KiB echo round trips (the
	// probe) while connection 1 sends Size-byte messages back to back to a
	// server that drains them; an op is one probe (mixed.go).
	Mixed
	// Fair: two connections on one socket each send Size-byte messages back
	// to back; an op is one message delivered, either connection (mixed.go).
	Fair
	// WAN: one connection sends Size-byte messages back to back through a
	// proxy that adds PathRTT to every round trip; an op is one message
	// delivered (wan.go).
	WAN
)

// Workload is one row of the comparison.
type Workload struct {
	Name    string
	Kind    Kind
	Size    int           // message size in bytes
	Conns   int           // logical connections on the one socket
	TLS     bool          // over TLS 1.3 (tls.go)
	PathRTT time.Duration // round-trip delay a proxy adds (WAN only)
}

// Workloads is the table every transport runs.
var Workloads = []Workload{
	{Name: "RTT100B", Kind: RTT, Size: 100, Conns: 1},
	{Name: "RTT1KB", Kind: RTT, Size: 1 << 10, Conns: 1},
	{Name: "RTT200KB", Kind: RTT, Size: 200 << 10, Conns: 1},
	{Name: "RTT1MB", Kind: RTT, Size: 1 << 20, Conns: 1},
	{Name: "SendOnly1KB", Kind: SendOnly, Size: 1 << 10, Conns: 1},
	{Name: "RecvOnly1KB", Kind: RecvOnly, Size: 1 << 10, Conns: 1},
	{Name: "Mux16x1KB", Kind: RTT, Size: 1 << 10, Conns: 16},
	{Name: "Mux256x1KB", Kind: RTT, Size: 1 << 10, Conns: 256},
	{Name: "Stream64KB", Kind: SendOnly, Size: 64 << 10, Conns: 1},
	{Name: "Memory10k", Kind: Memory, Size: hdrLen, Conns: 10_000},
	{Name: "Memory100k", Kind: Memory, Size: hdrLen, Conns: 100_000},
}

// TLSWorkloads are round trips over TLS 1.3; in them raw is
// length-prefixed messages on a plain *tls.Conn.
var TLSWorkloads = []Workload{
	{Name: "TLSRTT100B", Kind: RTT, Size: 100, Conns: 1, TLS: true},
	{Name: "TLSRTT1KB", Kind: RTT, Size: 1 << 10, Conns: 1, TLS: true},
	{Name: "TLSRTT64KB", Kind: RTT, Size: 64 << 10, Conns: 1, TLS: true},
}

// HOLWorkloads measure head-of-line blocking and fairness on one socket
// (mixed.go).
var HOLWorkloads = []Workload{
	{Name: "Mixed4MB", Kind: Mixed, Size: 4 << 20, Conns: 2},
	{Name: "Mixed16MB", Kind: Mixed, Size: 16 << 20, Conns: 2},
	{Name: "TLSMixed4MB", Kind: Mixed, Size: 4 << 20, Conns: 2, TLS: true},
	{Name: "Fair4MB", Kind: Fair, Size: 4 << 20, Conns: 2},
}

// WANWorkloads stream 64 KiB messages one way through a delaying proxy
// (wan.go), at two round-trip times.
var WANWorkloads = []Workload{
	{Name: "WAN20ms", Kind: WAN, Size: 64 << 10, Conns: 1, PathRTT: 20 * time.Millisecond},
	{Name: "WAN100ms", Kind: WAN, Size: 64 << 10, Conns: 1, PathRTT: 100 * time.Millisecond},
}

// AllWorkloads returns every list above, in table order.
func AllWorkloads() []Workload {
	return slices.Concat(Workloads, TLSWorkloads, HOLWorkloads, WANWorkloads)
}

// Find returns the workload with that name, from any of the lists.
func Find(name string) (Workload, bool) {
	i := slices.IndexFunc(AllWorkloads(), func(w Workload) bool { return w.Name == name })
	if i < 0 {
		return Workload{}, false
	}
	return AllWorkloads()[i], true
}

// SkippedByShort says whether -short (testing.Short) leaves w out: the
// memory workloads, and the WAN ones beyond a 20 ms round trip, whose
// passes take seconds each.
func (w Workload) SkippedByShort() bool {
	return w.Kind == Memory || (w.Kind == WAN && w.PathRTT > 20*time.Millisecond)
}

// TransportsFor returns the transports that run w, in table order.
func TransportsFor(w Workload) []Transport {
	switch {
	case w.Kind == Mixed && w.TLS:
		tls := tlsSockets()
		return []Transport{floorOver(tls, false), floorOver(tls, true), tcpconnTLS(false), tcpconnTLS(true)}
	case w.Kind == Mixed:
		return append([]Transport{floorOver(plainTCP, false), floorOver(plainTCP, true)}, Transports()...)
	case w.Kind == Fair:
		return []Transport{rawTransport(), yamuxTransport(), smuxTransport(), grpcTransport(), tcpconnTransport(false)}
	case w.Kind == WAN:
		return []Transport{rawTransport(), yamuxTransport(), smuxTransport(), grpcTransport(), tcpconnTransport(false), tcpconnTransport(true)}
	case w.TLS:
		tls := tlsSockets()
		return []Transport{rawOver(tls), yamuxOver(tls), smuxOver(tls), grpcOver(tls), tcpconnTLS(false), tcpconnTLS(true)}
	}
	return Transports()
}

// Run runs the workload over tr. Setup and teardown are outside the timer.
func (w Workload) Run(b *testing.B, tr Transport) {
	if tr.MaxConns > 0 && w.Conns > tr.MaxConns {
		msg := fmt.Sprintf("skipped: %s carries at most %d logical connections per socket through the API used here", tr.Name, tr.MaxConns)
		recordFailure(msg)
		b.Skip(msg)
	}
	switch w.Kind {
	case Mixed:
		w.mixed(b, tr)
		return
	case Fair:
		w.fair(b, tr)
		return
	case WAN:
		w.wan(b, tr)
		return
	}
	b.ReportAllocs()
	if w.Kind != Memory {
		b.SetBytes(int64(w.Size))
	}
	switch w.Kind {
	case RTT:
		w.rtt(b, tr)
	case SendOnly:
		w.sendOnly(b, tr)
	case RecvOnly:
		w.recvOnly(b, tr)
	case Memory:
		w.memory(b, tr)
	}
}

// Every message carries (connection index, sequence number) as two
// big-endian u64 in its first hdrLen bytes; the rest is a fixed pattern.
const hdrLen = 16

func newMessage(size int) []byte {
	m := make([]byte, size)
	copy(m[min(hdrLen, size):], messagePattern(size)[min(hdrLen, size):])
	return m
}

// messagePattern returns at least size bytes of the pattern, byte i being
// byte(i*7 + 3), computed once and grown on demand (filling 16 MiB byte by
// byte took about 15 ms per message buffer, a Mixed16MB pass has two).
func messagePattern(size int) []byte {
	patternMu.Lock()
	defer patternMu.Unlock()
	for i := len(pattern); i < size; i++ {
		pattern = append(pattern, byte(i*7+3))
	}
	return pattern[:size]
}

var (
	patternMu sync.Mutex
	pattern   []byte
)

func stamp(m []byte, conn, seq uint64) {
	binary.BigEndian.PutUint64(m[0:8], conn)
	binary.BigEndian.PutUint64(m[8:16], seq)
}

// check reports how got differs from want, a message built by newMessage
// and stamped (conn, seq).
func check(got, want []byte) error {
	if len(got) != len(want) {
		return fmt.Errorf("got %d bytes, want %d", len(got), len(want))
	}
	if len(got) >= hdrLen && !bytes.Equal(got[:hdrLen], want[:hdrLen]) {
		return fmt.Errorf("got (conn %d, seq %d), want (conn %d, seq %d)",
			binary.BigEndian.Uint64(got[0:8]), binary.BigEndian.Uint64(got[8:16]),
			binary.BigEndian.Uint64(want[0:8]), binary.BigEndian.Uint64(want[8:16]))
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("payload of (conn %d, seq %d) differs",
			binary.BigEndian.Uint64(want[0:8]), binary.BigEndian.Uint64(want[8:16]))
	}
	return nil
}

// echo answers every message with itself until Receive fails.
func echo(c Conn) error {
	for {
		m, err := c.Receive()
		if err != nil {
			return err
		}
		if err := c.Send(m); err != nil {
			return err
		}
	}
}

// roundTrips does n checked round trips of msg on c as connection idx.
func roundTrips(c Conn, idx uint64, msg []byte, n int) error {
	for seq := range n {
		stamp(msg, idx, uint64(seq))
		if err := c.Send(msg); err != nil {
			return err
		}
		got, err := c.Receive()
		if err != nil {
			return err
		}
		if err := check(got, msg); err != nil {
			return err
		}
	}
	return nil
}

func (w Workload) rtt(b *testing.B, tr Transport) {
	e := setup(b, tr, w.Conns, w.Conns > 1, echo)
	msgs := make([][]byte, w.Conns)
	for i := range msgs {
		msgs[i] = newMessage(w.Size)
	}
	b.ResetTimer()
	if w.Conns == 1 {
		if err := roundTrips(e.conns[0], 0, msgs[0], b.N); err != nil {
			e.fatalf("round trip: %v", err)
		}
	} else {
		// b.N round trips in total, split over the connections.
		var wg sync.WaitGroup
		errs := make(chan error, w.Conns)
		for i, c := range e.conns {
			n := b.N / w.Conns
			if i < b.N%w.Conns {
				n++
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := roundTrips(c, uint64(i), msgs[i], n); err != nil {
					errs <- fmt.Errorf("conn %d: %w", i, err)
					e.abort()
				}
			}()
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			e.fatalf("round trip: %v", err)
		}
	}
	b.StopTimer()
	e.finish()
}

func (w Workload) sendOnly(b *testing.B, tr Transport) {
	n := b.N
	done := make(chan struct{})
	e := setup(b, tr, 1, false, func(c Conn) error {
		want := newMessage(w.Size)
		for seq := range n {
			got, err := c.Receive()
			if err != nil {
				return err
			}
			stamp(want, 0, uint64(seq))
			if err := check(got, want); err != nil {
				return err
			}
		}
		close(done)
		c.Receive() // park until the client closes
		return nil
	})
	msg := newMessage(w.Size)
	b.ResetTimer()
	for seq := range n {
		stamp(msg, 0, uint64(seq))
		if err := e.conns[0].Send(msg); err != nil {
			e.fatalf("send: %v", err)
		}
	}
	select {
	case <-done:
	case <-e.failed:
		e.fatalf("server did not receive all %d messages", n)
	}
	b.StopTimer()
	e.finish()
}

func (w Workload) recvOnly(b *testing.B, tr Transport) {
	e := setup(b, tr, 1, false, func(c Conn) error {
		req, err := c.Receive()
		if err != nil {
			return err
		}
		if len(req) != hdrLen {
			return fmt.Errorf("request of %d bytes", len(req))
		}
		n := binary.BigEndian.Uint64(req[8:16])
		msg := newMessage(w.Size)
		for seq := range n {
			stamp(msg, 0, seq)
			if err := c.Send(msg); err != nil {
				return err
			}
		}
		c.Receive() // park until the client closes
		return nil
	})
	want := newMessage(w.Size)
	req := make([]byte, hdrLen)
	stamp(req, 0, uint64(b.N))
	b.ResetTimer()
	if err := e.conns[0].Send(req); err != nil {
		e.fatalf("request: %v", err)
	}
	for seq := range b.N {
		got, err := e.conns[0].Receive()
		if err != nil {
			e.fatalf("receive: %v", err)
		}
		stamp(want, 0, uint64(seq))
		if err := check(got, want); err != nil {
			e.fatalf("receive: %v", err)
		}
	}
	b.StopTimer()
	e.finish()
}

// memory opens w.Conns logical connections, makes each do one 16-byte round
// trip (so the server side knows it), and reports the growth of the live
// heap and of the goroutine count, client and server sides together,
// divided by w.Conns. Then, with all of them still open, it times round
// trips spread over them. Setup happens once per benchmark (b.Loop).
func (w Workload) memory(b *testing.B, tr Transport) {
	before := quiesce()
	g0 := runtime.NumGoroutine()

	e := setup(b, tr, w.Conns, false, echo)
	msgs := make([][]byte, w.Conns)
	for i, c := range e.conns {
		msgs[i] = make([]byte, hdrLen)
		stamp(msgs[i], uint64(i), 0)
		if err := c.Send(msgs[i]); err != nil {
			e.fatalf("conn %d: send: %v", i, err)
		}
	}
	for i, c := range e.conns {
		got, err := c.Receive()
		if err != nil {
			e.fatalf("conn %d: receive: %v", i, err)
		}
		if err := check(got, msgs[i]); err != nil {
			e.fatalf("conn %d: %v", i, err)
		}
	}
	after := settledHeap()
	g1 := runtime.NumGoroutine()
	heapPerConn := (float64(after) - float64(before)) / float64(w.Conns)
	gPerConn := float64(g1-g0) / float64(w.Conns)

	seq := uint64(1)
	for i := 0; b.Loop(); i++ {
		if i == w.Conns {
			i, seq = 0, seq+1
		}
		stamp(msgs[i], uint64(i), seq)
		if err := roundTrip(e.conns[i], msgs[i]); err != nil {
			e.fatalf("conn %d: %v", i, err)
		}
	}
	b.ReportMetric(heapPerConn, "heapB/conn")
	b.ReportMetric(gPerConn, "goroutines/conn")
	e.finish()
}

// roundTrip does one checked round trip of an already stamped message.
func roundTrip(c Conn, msg []byte) error {
	if err := c.Send(msg); err != nil {
		return err
	}
	got, err := c.Receive()
	if err != nil {
		return err
	}
	return check(got, msg)
}
