package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	tcpconn "github.com/pulsyflux/tcp-conn"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// gRPC without generated code, for the adapter tests and benchmarks: a
// hand-written grpc.ServiceDesc whose messages are raw bytes (bytesCodec in
// grpc_codec.go, forced on both ends), served on a tcpconn Listener's
// NetListener or on a plain TCP listener, and a client that dials through a
// tcpconn Client's DialConn or net.Dialer.

const (
	grpcService  = "tcpconnbench.Bytes"
	grpcEcho     = "/" + grpcService + "/Echo"     // unary: the request back
	grpcHang     = "/" + grpcService + "/Hang"     // unary: waits for its context to end
	grpcDownload = "/" + grpcService + "/Download" // server stream: see downloadRequest
)

var grpcDownloadDesc = &grpc.StreamDesc{StreamName: "Download", ServerStreams: true}

// downloadRequest asks Download for total bytes of bodyPattern in chunks of
// chunk bytes, and then to end the stream by how: 'o' with OK, 'f' with
// codes.Aborted, 'h' by waiting for its context to end (a Stop or a lost
// connection).
type downloadRequest struct {
	total, chunk int
	how          byte
}

func (r downloadRequest) encode() []byte {
	b := binary.BigEndian.AppendUint64(nil, uint64(r.total))
	b = binary.BigEndian.AppendUint32(b, uint32(r.chunk))
	return append(b, r.how)
}

func decodeDownloadRequest(b []byte) (downloadRequest, error) {
	if len(b) != 13 {
		return downloadRequest{}, status.Errorf(codes.InvalidArgument, "download request of %d bytes", len(b))
	}
	r := downloadRequest{
		total: int(binary.BigEndian.Uint64(b)),
		chunk: int(binary.BigEndian.Uint32(b[8:])),
		how:   b[12],
	}
	if r.total < 0 || r.total > len(bodyPattern()) || r.chunk <= 0 {
		return downloadRequest{}, status.Errorf(codes.InvalidArgument, "download of %d bytes in chunks of %d", r.total, r.chunk)
	}
	return r, nil
}

// bodyPattern is 16 MiB of deterministic bytes that do not repeat within a
// chunk (an xorshift stream): downloads are slices of it.
var bodyPattern = sync.OnceValue(func() []byte {
	b := make([]byte, 16<<20)
	x := uint64(0x9e3779b97f4a7c15)
	for i := 0; i < len(b); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(b[i:], x)
	}
	return b
})

// grpcServerHooks lets a test watch the server's handlers. Nil fields are
// not called.
type grpcServerHooks struct {
	hangReturned func(error)               // Hang's context ended with this error
	downloadHung func(sent int)            // Download ('h') sent its bytes and waits
	downloadEnd  func(sent int, err error) // Download returned
}

func grpcServiceDesc() *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: grpcService,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{
			{MethodName: "Echo", Handler: grpcUnary(func(_ *grpcServerHooks, _ context.Context, in []byte) ([]byte, error) {
				return in, nil
			})},
			{MethodName: "Hang", Handler: grpcUnary(func(h *grpcServerHooks, ctx context.Context, _ []byte) ([]byte, error) {
				<-ctx.Done()
				if h.hangReturned != nil {
					h.hangReturned(ctx.Err())
				}
				return nil, status.FromContextError(ctx.Err()).Err()
			})},
		},
		Streams: []grpc.StreamDesc{{StreamName: "Download", ServerStreams: true, Handler: grpcDownloadHandler}},
	}
}

// grpcUnary makes a unary MethodDesc handler from f, as generated code does.
func grpcUnary(f func(*grpcServerHooks, context.Context, []byte) ([]byte, error)) func(any, context.Context, func(any) error, grpc.UnaryServerInterceptor) (any, error) {
	return func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
		var in []byte
		if err := dec(&in); err != nil {
			return nil, err
		}
		h := srv.(*grpcServerHooks)
		if interceptor == nil {
			return f(h, ctx, in)
		}
		return interceptor(ctx, in, &grpc.UnaryServerInfo{Server: srv}, func(ctx context.Context, req any) (any, error) {
			return f(h, ctx, req.([]byte))
		})
	}
}

func grpcDownloadHandler(srv any, stream grpc.ServerStream) (err error) {
	h := srv.(*grpcServerHooks)
	sent := 0
	if h.downloadEnd != nil {
		defer func() { h.downloadEnd(sent, err) }()
	}
	var in []byte
	if err := stream.RecvMsg(&in); err != nil {
		return err
	}
	r, err := decodeDownloadRequest(in)
	if err != nil {
		return err
	}
	body := bodyPattern()
	for sent < r.total {
		n := min(r.chunk, r.total-sent)
		if err := stream.SendMsg(body[sent : sent+n]); err != nil {
			return err
		}
		sent += n
	}
	switch r.how {
	case 'f':
		return status.Errorf(codes.Aborted, "cut short after %d bytes", sent)
	case 'h':
		if h.downloadHung != nil {
			h.downloadHung(sent)
		}
		<-stream.Context().Done()
		return status.FromContextError(stream.Context().Err()).Err()
	}
	return nil
}

// grpcPair is a gRPC server and a client connected to it over one
// transport: "tcpconn" (the server on a tcpconn Listener's NetListener, the
// client dialling with a tcpconn Client's DialConn) or "tcp" (net.Listen
// and net.Dialer, gRPC's own HTTP/2 connection).
type grpcPair struct {
	srv    *grpc.Server
	addr   string
	ln     *tcpconn.Listener // tcpconn only
	cl     *tcpconn.Client   // tcpconn only
	dial   func(context.Context, string) (net.Conn, error)
	dials  atomic.Int32 // connections the client dialled
	served chan error   // Serve's result
}

func startGRPC(tb testing.TB, transport string, hooks *grpcServerHooks) *grpcPair {
	tb.Helper()
	if hooks == nil {
		hooks = &grpcServerHooks{}
	}
	p := &grpcPair{served: make(chan error, 1)}
	var nl net.Listener
	switch transport {
	case "tcpconn":
		ln, err := tcpconn.Listen("tcp", "127.0.0.1:0", nil)
		if err != nil {
			tb.Fatal(err)
		}
		cl, err := tcpconn.NewClient(nil)
		if err != nil {
			ln.Close()
			tb.Fatal(err)
		}
		p.ln, p.cl, nl = ln, cl, ln.NetListener()
		p.dial = func(ctx context.Context, addr string) (net.Conn, error) {
			p.dials.Add(1)
			return cl.DialConn(ctx, "tcp", addr)
		}
	case "tcp":
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		nl = ln
		var d net.Dialer
		p.dial = func(ctx context.Context, addr string) (net.Conn, error) {
			p.dials.Add(1)
			return d.DialContext(ctx, "tcp", addr)
		}
	default:
		tb.Fatalf("unknown transport %q", transport)
	}
	p.addr = nl.Addr().String()
	p.srv = grpc.NewServer(
		grpc.ForceServerCodecV2(bytesCodec{}),
		grpc.MaxRecvMsgSize(grpcMaxMsg),
		grpc.MaxSendMsgSize(grpcMaxMsg),
	)
	p.srv.RegisterService(grpcServiceDesc(), hooks)
	go func() { p.served <- p.srv.Serve(nl) }()
	tb.Cleanup(func() {
		// Stop closes the listener and every connection; a Stop that does
		// not return, or a Serve that does not, fails the test.
		bounded(tb, 30*time.Second, "grpc.Server.Stop", p.srv.Stop)
		select {
		case err := <-p.served:
			if err != nil && !errors.Is(err, grpc.ErrServerStopped) && !errors.Is(err, net.ErrClosed) {
				tb.Errorf("grpc.Server.Serve: %v", err)
			}
			p.served <- err // for a test that waits too
		case <-time.After(30 * time.Second):
			tb.Error("grpc.Server.Serve did not return after Stop")
		}
		if p.cl != nil {
			bounded(tb, 30*time.Second, "tcpconn.Client.Close", func() { p.cl.Close() })
		}
	})
	return p
}

// client returns a new gRPC client of p (a ClientConn of its own: one
// HTTP/2 connection, over tcpconn one logical connection), closed at the
// end of the test.
func (p *grpcPair) client(tb testing.TB) *grpc.ClientConn {
	tb.Helper()
	cc, err := grpc.NewClient("passthrough:///"+p.addr,
		grpc.WithContextDialer(p.dial),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(
			grpc.ForceCodecV2(bytesCodec{}),
			grpc.MaxCallRecvMsgSize(grpcMaxMsg),
			grpc.MaxCallSendMsgSize(grpcMaxMsg),
		),
	)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { bounded(tb, 30*time.Second, "grpc.ClientConn.Close", func() { cc.Close() }) })
	return cc
}

// bounded runs f and fails tb if it takes longer than limit (f is left
// running: the test binary's -timeout is the last resort).
func bounded(tb testing.TB, limit time.Duration, what string, f func()) {
	tb.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(limit):
		tb.Errorf("%s did not return within %v", what, limit)
	}
}
