package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	tcpconn "github.com/pulsyflux/tcp-conn"
)

// The adapters (tcpconn's NetConn, NetListener, DialConn) under byte-stream
// protocols, beside the same protocol on its own TCP connection:
//
//   - HTTP: HTTP/1.1 round trips, net/http on both ends: POST a body,
//     the server reads it and writes it back (Content-Length, one
//     keep-alive connection). transport=tcp: net.Listen and net.Dialer;
//     transport=tcpconn: http.Server on Listener.NetListener, http.Transport
//     with DialContext: Client.DialConn (one logical connection).
//   - GRPC: unary calls of a raw-bytes echo method (grpcraw_test.go), one
//     grpc.ClientConn. transport=tcp: gRPC's own HTTP/2 connection on a
//     TCP socket; transport=tcpconn: that HTTP/2 connection on one logical
//     connection (Serve on NetListener, WithContextDialer: DialConn).
//
// An op is one round trip; SetBytes is the body size (one way), so MB/s
// counts one direction, as the RTT workloads do. The 16 MiB cases are
// skipped with -short.

func BenchmarkHTTP100B(b *testing.B)  { adapterBench(b, 100, benchHTTP) }
func BenchmarkHTTP16MiB(b *testing.B) { adapterBench(b, 16<<20, benchHTTP) }
func BenchmarkGRPC100B(b *testing.B)  { adapterBench(b, 100, benchGRPC) }
func BenchmarkGRPC16MiB(b *testing.B) { adapterBench(b, 16<<20, benchGRPC) }

// adapterWatchdog bounds one benchmark run: every call carries a context
// that ends then.
const adapterWatchdog = 2 * time.Minute

func adapterBench(b *testing.B, size int, f func(b *testing.B, transport string, size int)) {
	if size > 1<<20 && testing.Short() {
		b.Skip("skipped with -short")
	}
	for _, tr := range []string{"tcp", "tcpconn"} {
		b.Run("transport="+tr, func(b *testing.B) { f(b, tr, size) })
	}
}

// stampBody returns a request body of size bytes whose first 8 carry seq
// (the rest from bodyPattern), in buf if it is large enough.
func stampBody(buf []byte, size int, seq uint64) []byte {
	if cap(buf) < size {
		buf = make([]byte, size)
		copy(buf, bodyPattern())
	}
	buf = buf[:size]
	binary.BigEndian.PutUint64(buf, seq)
	return buf
}

// checkReply compares a reply with the request: in full up to 64 KiB, and
// beyond that its length and sequence number (the whole body is compared
// in the unmeasured warm-up), so that a 16 MiB compare does not dilute
// what the transports cost.
func checkReply(got, want []byte) error {
	if len(got) != len(want) {
		return fmt.Errorf("reply of %d bytes, want %d", len(got), len(want))
	}
	if len(want) <= 64<<10 {
		if !bytes.Equal(got, want) {
			return errors.New("the reply is not the request")
		}
		return nil
	}
	if g, w := binary.BigEndian.Uint64(got), binary.BigEndian.Uint64(want); g != w {
		return fmt.Errorf("reply to request %d, want %d", g, w)
	}
	return nil
}

// httpEchoServer reads the request body whole, then writes it back. It
// keeps one spare buffer (not a sync.Pool, which a GC empties: a transport
// that makes more garbage would pay for the harness's 16 MiB buffers too).
type httpEchoServer struct{ spare chan []byte }

func newHTTPEchoServer() *httpEchoServer { return &httpEchoServer{spare: make(chan []byte, 1)} }

func (s *httpEchoServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := r.ContentLength
	if n < 0 || n > 64<<20 {
		http.Error(w, "want a Content-Length up to 64 MiB", http.StatusBadRequest)
		return
	}
	var buf []byte
	select {
	case buf = <-s.spare:
	default:
	}
	if int64(cap(buf)) < n {
		buf = make([]byte, n)
	}
	defer func() {
		select {
		case s.spare <- buf:
		default:
		}
	}()
	body := buf[:n]
	if _, err := io.ReadFull(r.Body, body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	w.Write(body)
}

func benchHTTP(b *testing.B, transport string, size int) {
	var (
		nl    net.Listener
		dial  func(ctx context.Context, network, addr string) (net.Conn, error)
		dials atomic.Int32
		cl    *tcpconn.Client
	)
	switch transport {
	case "tcp":
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		nl = ln
		dial = (&net.Dialer{}).DialContext
	case "tcpconn":
		ln, err := tcpconn.Listen("tcp", "127.0.0.1:0", nil)
		if err != nil {
			b.Fatal(err)
		}
		if cl, err = tcpconn.NewClient(nil); err != nil {
			ln.Close()
			b.Fatal(err)
		}
		nl, dial = ln.NetListener(), cl.DialConn
	}
	hs := &http.Server{Handler: newHTTPEchoServer(), ReadHeaderTimeout: adapterWatchdog}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(nl) }()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return dial(ctx, network, addr)
		},
		DisableCompression:  true,
		MaxIdleConnsPerHost: 1,
	}
	defer func() {
		tr.CloseIdleConnections()
		bounded(b, 30*time.Second, "http.Server.Close", func() { hs.Close() })
		select {
		case err := <-served:
			if !errors.Is(err, http.ErrServerClosed) {
				b.Errorf("http.Server.Serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			b.Error("http.Server.Serve did not return after Close")
		}
		if cl != nil {
			bounded(b, 30*time.Second, "tcpconn.Client.Close", func() { cl.Close() })
		}
	}()
	client := &http.Client{Transport: tr}
	url := "http://" + nl.Addr().String() + "/echo"
	ctx, cancel := context.WithTimeout(b.Context(), adapterWatchdog)
	defer cancel()

	var req, reply []byte
	roundTrip := func(seq uint64, full bool) error {
		req = stampBody(req, size, seq)
		hr, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(req))
		if err != nil {
			return err
		}
		resp, err := client.Do(hr)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.ContentLength != int64(size) {
			return fmt.Errorf("response %s with Content-Length %d, want 200 with %d", resp.Status, resp.ContentLength, size)
		}
		if cap(reply) < size {
			reply = make([]byte, size)
		}
		reply = reply[:size]
		if _, err := io.ReadFull(resp.Body, reply); err != nil {
			return err
		}
		// Read to EOF, so the connection goes back to the pool.
		if n, err := resp.Body.Read(reply[:1]); n != 0 || err != io.EOF {
			return fmt.Errorf("after the body: %d bytes, %v; want EOF", n, err)
		}
		if full && !bytes.Equal(reply, req) {
			return errors.New("the reply is not the request")
		}
		return checkReply(reply, req)
	}

	measureRoundTrips(b, size, roundTrip, &dials, cl)
}

func benchGRPC(b *testing.B, transport string, size int) {
	p := startGRPC(b, transport, nil)
	cc := p.client(b)
	ctx, cancel := context.WithTimeout(b.Context(), adapterWatchdog)
	defer cancel()

	var req, reply []byte
	roundTrip := func(seq uint64, full bool) error {
		req = stampBody(req, size, seq)
		if err := cc.Invoke(ctx, grpcEcho, req, &reply); err != nil {
			return err
		}
		if full && !bytes.Equal(reply, req) {
			return errors.New("the reply is not the request")
		}
		return checkReply(reply, req)
	}

	measureRoundTrips(b, size, roundTrip, &p.dials, p.cl)
}

// measureRoundTrips warms up with one fully checked round trip (it dials),
// times the others, and checks that they all went over one connection
// (and, over tcpconn, one socket).
func measureRoundTrips(b *testing.B, size int, roundTrip func(seq uint64, full bool) error, dials *atomic.Int32, cl *tcpconn.Client) {
	b.Helper()
	if err := roundTrip(0, true); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(size))
	seq := uint64(1)
	for b.Loop() {
		if err := roundTrip(seq, false); err != nil {
			b.Fatalf("round trip %d: %v", seq, err)
		}
		seq++
	}
	b.StopTimer()
	if n := dials.Load(); n != 1 {
		b.Errorf("the client dialled %d connections, want 1", n)
	}
	if cl != nil {
		if n := cl.Stats().Links; n != 1 {
			b.Errorf("the tcpconn client has %d sockets, want 1", n)
		}
	}
}
