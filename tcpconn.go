// SPDX-License-Identifier: MIT

// Package tcpconn gives many logical, message-oriented connections over a
// few pooled TCP (or TLS) sockets: ID-routed multiplexing, per-connection
// flow control, auto-reconnect on the client side and idle timeouts on both.
//
// Client connections to the same address (and *Config) share one
// physical socket, reference counted, and reconnect after it is lost; a
// server's connections live as long as their socket. A target with a
// scheme ("dns:///host:port", "srv:///name", "list:///a,b") names many
// servers: a Client spreads its connections over all of them, follows the
// set as it changes, and moves connections off a server that drains
// (README.md, "Many servers"). Which constructor:
//
//	NewConnection(addr, idle)            the original API: a client catch-all (empty ID); never blocks
//	NewConnectionWithID(addr, id, idle)  the original API: a client connection with an ID; never blocks
//	Open(addr, opts...)                  the same with options (WithID, WithConfig for TLS, a Dialer, limits)
//	Dial(ctx, addr, opts...)             a client connection whose socket is up and has heard the server:
//	                                     dial, TLS and handshake errors are reported at once
//	NewClient(cfg) then Client.Open/Dial a client with its own pool, Config and Stats (a Budget of its own,
//	                                     metrics per component); Close ends all its connections
//	WrapConnection(conn, idle)           the original API: a server catch-all on an accepted socket
//	WrapConnectionWithID(conn, id, idle) the original API: one ID on an accepted socket (any net.Conn, TLS too)
//	Wrap(conn, opts...)                  the same with options and an immediate error
//	Listen(network, addr, cfg)           a server that accepts sockets itself; Listener.Accept (or
//	  and Listener.Accept/AcceptContext  AcceptContext) returns each logical connection a client opens
//
// The original constructors keep their signatures and never block; the
// others report errors as values and take a context where they wait.
//
// Every method of Connection is safe for concurrent use. Send returns once
// the message is committed to the socket's ordered write queue; messages on
// one logical connection arrive in order, whole, or not at all (see
// README.md, "Guarantees").
package tcpconn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Limits and defaults, with their reasons.
const (
	// DefaultIdleTimeout is the original TCP-Conn's: a logical connection unused for this
	// long is closed (a client one reconnects on next use).
	DefaultIdleTimeout = 5 * time.Minute
	// DefaultMaxMessageSize is the original TCP-Conn's 16 MiB.
	DefaultMaxMessageSize = 16 << 20
	// DefaultStreamWindow is the window a logical connection starts with:
	// a window update per 512 KiB consumed keeps a loopback stream of
	// 64 KiB messages moving (256 KiB measured 622 vs 905 MB/s,
	// PERFORMANCE.md). Windows grow from there while the reader keeps up
	// (README, "Flow control").
	DefaultStreamWindow = 1 << 20
	// DefaultMaxStreamWindow is how far a logical connection's window may
	// grow (on paths of 5 ms round trip or more): through a 20 ms proxy,
	// raw TCP kept up to 62 MiB in flight, as the proxy buffers for it,
	// and 128 MiB carried 7 % more than 64 (go-yamux stops at 16 MiB;
	// PERFORMANCE.md, "Memory budget and windows that grow"). The link's
	// window, reserved from the Budget, bounds it all the same.
	DefaultMaxStreamWindow = 128 << 20
	// DefaultLinkWindow is the window a physical link starts with, all its
	// logical connections together: what any peer may make this process
	// hold without drawing on the Budget (plus one message in flight).
	// Twice DefaultStreamWindow, so that one logical connection whose
	// reader is absent holds at most half of it even when the Budget is
	// spent (README, "Flow control").
	DefaultLinkWindow = 2 * DefaultStreamWindow
	// DefaultMaxLinkWindow is how far a link's window may grow, with
	// bytes reserved from its Budget: one stream at its largest, half of
	// DefaultBudget.
	DefaultMaxLinkWindow = 128 << 20
	// DefaultFrameSize: messages above it are sent in parts, so a small
	// message waits behind at most one part of another. 64 KiB is the
	// original TCP-Conn's chunk size; smaller parts cost throughput on
	// Stream64KB and RTT1MB (a write and a header per part), for a probe
	// p99 under bulk that the bytes in flight dominate anyway
	// (PERFORMANCE.md).
	DefaultFrameSize = 64 << 10
	// DefaultLaneThreshold: messages of this size or more go on the bulk
	// lane. Below it a message costs a few frames in parts, which the
	// scheduler slips between small messages; above it, one socket's
	// kernel buffers would hold enough of it to delay them.
	DefaultLaneThreshold = 256 << 10
	// DefaultSendQueueLimit: unsent bytes the kernel may hold per socket
	// (measured in PERFORMANCE.md, "Small messages beside bulk ones").
	DefaultSendQueueLimit = 128 << 10
	// DefaultMaxStreams bounds logical connections per physical link.
	DefaultMaxStreams = 65536
	// DefaultAcceptBacklog is how many new logical connections a Listener
	// holds before Accept takes them; more are refused, never blocking.
	DefaultAcceptBacklog = 256
	// DefaultKeepAliveInterval: a PING after this much silence.
	DefaultKeepAliveInterval = 15 * time.Second
	// DefaultMaxControlFramesPerSecond bounds pings, resets and other cheap
	// frames a peer can make us handle (HTTP/2 flood lessons).
	DefaultMaxControlFramesPerSecond = 1000
	// DefaultHandshakeTimeout bounds the wait for the peer's HELLO.
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultDialTimeout bounds one dial, TLS handshake included.
	DefaultDialTimeout = 10 * time.Second
	// Reconnect backoff: doubled per consecutive failure, with jitter.
	DefaultReconnectBackoffMin = 10 * time.Millisecond
	DefaultReconnectBackoffMax = 2 * time.Second
	// DefaultResolveInterval: targets with a scheme are looked up again this
	// often, near the TTL of a Kubernetes or Consul DNS answer (CoreDNS's
	// default is 30 s).
	DefaultResolveInterval = 30 * time.Second
	// DefaultMaxLinkAgeGrace: how long a link past MaxLinkAge may stay open
	// for its logical connections to move away at a quiet point.
	DefaultMaxLinkAgeGrace = 10 * time.Second
	// DefaultPlacementBalance bounds an endpoint's share of a fleet's named
	// logical connections at 1.1 times the mean: hashing alone leaves the
	// busiest of 20 endpoints near 1.25x the mean at 100 IDs each (the
	// binomial spread of a hash), and a bound this close moves about 1 %
	// of IDs off their first choice.
	DefaultPlacementBalance = 1.1

	// readBufferSize batches small frames per read syscall.
	readBufferSize = 64 << 10
	// maxUnbackedAlloc is the first buffer of a large message; it then
	// doubles as bytes arrive, so it is never more than twice what
	// actually arrived (or this much).
	maxUnbackedAlloc = 1 << 20
	// closeWriteTimeout bounds the goodbye write of a closing link.
	closeWriteTimeout = time.Second
)

// Errors. Test with errors.Is; returned errors often wrap a cause.
var (
	// ErrClosed: the Connection or Listener was closed locally.
	ErrClosed = errors.New("tcpconn: connection closed")
	// ErrIdleTimeout: the logical connection was unused for its idle
	// timeout. A client Connection reconnects on its next call. It is a
	// net.Error whose Timeout reports true.
	ErrIdleTimeout error = &timeoutError{"tcpconn: idle timeout"}
	// ErrMessageTooLarge: a message exceeds the maximum message size (this
	// side's for Send, and the peer's). The connection stays usable.
	ErrMessageTooLarge = errors.New("tcpconn: message too large")
	// ErrProtocol: the peer broke the wire protocol or a limit; the physical
	// link was closed. The wrapping error names the cause.
	ErrProtocol = errors.New("tcpconn: protocol violation")
	// ErrHandshake: the peer is not a tcpconn endpoint of this protocol
	// version, or did not say hello in time.
	ErrHandshake = errors.New("tcpconn: handshake failed")
	// ErrLinkLost: the physical connection ended (peer closed, reset, network
	// error). A client Connection reconnects on its next call.
	ErrLinkLost = errors.New("tcpconn: physical connection lost")
	// ErrKeepAliveTimeout: nothing was heard from the peer within the
	// keepalive timeout; the physical link was closed.
	// It is a net.Error whose Timeout reports true.
	ErrKeepAliveTimeout error = &timeoutError{"tcpconn: keepalive timeout"}
	// ErrPeerClosed: the peer closed this logical connection. It matches
	// io.EOF too, so receive loops can stop on either.
	ErrPeerClosed = fmt.Errorf("tcpconn: logical connection closed by peer (%w)", io.EOF)
	// ErrRefused: the peer would not take this logical connection (its
	// accept backlog or connection limit was full).
	ErrRefused = errors.New("tcpconn: logical connection refused by peer")
	// ErrIDInUse: another Connection already holds this ID on the socket.
	ErrIDInUse = errors.New("tcpconn: connection ID already in use on this socket")
	// ErrTooManyStreams: the socket carries as many logical connections as
	// this side or the peer allows.
	ErrTooManyStreams = errors.New("tcpconn: too many logical connections")
	// ErrInvalidID: IDs are at most 254 bytes.
	ErrInvalidID = errors.New("tcpconn: invalid connection ID")
	// ErrInvalidConfig: a Config field is out of range; the error names it.
	ErrInvalidConfig = errors.New("tcpconn: invalid config")
	// ErrInvalidTarget: a target is malformed or has a scheme its
	// Resolver does not know; the error names the target.
	ErrInvalidTarget = errors.New("tcpconn: invalid target")
	// ErrResolve: a target's name did not resolve to any endpoint. Dial
	// reports it at once; Open's Connections retry with backoff.
	ErrResolve = errors.New("tcpconn: target did not resolve")
)

// timeoutError is a sentinel that is also a net.Error with Timeout() true,
// so code written for net.Conn (net/http, retry loops) sees a timeout.
type timeoutError struct{ msg string }

func (e *timeoutError) Error() string { return e.msg }

// Timeout reports true: the error is a timeout.
func (e *timeoutError) Timeout() bool { return true }

// Temporary reports true, as net's own timeouts do.
func (e *timeoutError) Temporary() bool { return true }

// Config holds settings for physical links and defaults for the logical
// connections on them. The zero value of a field means its default; a nil
// *Config means all defaults. A Config must not be changed after use.
type Config struct {
	// IdleTimeout closes a logical connection unused for this long
	// (default DefaultIdleTimeout; negative: never).
	IdleTimeout time.Duration
	// MaxMessageSize is the largest message sent or accepted (default 16 MiB,
	// at least InitialWindow, at most 1<<32-1).
	MaxMessageSize int
	// StreamWindow is the flow-control window a logical connection starts
	// with (at least InitialWindow); it grows while the reader keeps up,
	// up to MaxStreamWindow (default the larger of
	// DefaultMaxStreamWindow and StreamWindow; equal to StreamWindow: no
	// growth).
	StreamWindow    int
	MaxStreamWindow int
	// LinkWindow is the window a physical link starts with, all IDs
	// together (default and least: twice StreamWindow, so one ID whose
	// reader is absent holds at most half of it); it grows up to
	// MaxLinkWindow (default the larger of DefaultMaxLinkWindow and
	// LinkWindow) with bytes reserved from Budget. Messages that wait
	// for their reader give their link credit back at once while Budget
	// has room (README, "Flow control").
	LinkWindow    int
	MaxLinkWindow int
	// Budget bounds the link windows' growth, summed over every link that
	// shares it (default: DefaultBudget, shared by the whole process).
	Budget *Budget
	// FrameSize is the largest piece a message is written in: a larger one
	// goes out in parts of this size, between which other logical
	// connections' messages and control frames pass (default
	// DefaultFrameSize, at least 1 KiB).
	FrameSize int
	// MaxStreams bounds logical connections per physical link.
	MaxStreams int
	// AcceptBacklog is the Listener's queue of not-yet-accepted connections.
	AcceptBacklog int
	// KeepAliveInterval sends a PING after this much silence (negative:
	// no keepalive). KeepAliveTimeout closes the link when nothing was heard
	// for that long (default 3 intervals); on Linux it is also the socket's
	// TCP_USER_TIMEOUT, so unacknowledged writes fail as fast.
	KeepAliveInterval time.Duration
	KeepAliveTimeout  time.Duration
	// MaxControlFramesPerSecond bounds pings, pongs, resets and stray
	// control frames from a peer; beyond it the link is closed.
	MaxControlFramesPerSecond int
	// HandshakeTimeout bounds the wait for the peer's HELLO.
	HandshakeTimeout time.Duration
	// DialTimeout bounds one dial including the TLS and tcpconn handshakes.
	DialTimeout time.Duration
	// ReconnectBackoffMin and Max bound the wait between failed dials of a
	// client (exponential, with jitter).
	ReconnectBackoffMin time.Duration
	ReconnectBackoffMax time.Duration
	// TLSConfig, if set, makes clients dial TLS. (Servers wrap or listen
	// on TLS connections themselves.)
	TLSConfig *tls.Config
	// Dialer replaces net.Dialer for clients (proxies, Unix sockets, tests).
	Dialer func(ctx context.Context, network, address string) (net.Conn, error)
	// SendQueueLimit bounds the bytes the kernel holds for a socket that it
	// has not sent yet (Linux TCP_NOTSENT_LOWAT; ignored elsewhere), so that
	// a small message or a PING queued behind a bulk transfer waits for at
	// most this much in the kernel (default DefaultSendQueueLimit; negative:
	// the kernel's default, unbounded).
	SendQueueLimit int
	// SocketReadBuffer and SocketWriteBuffer set SO_RCVBUF / SO_SNDBUF when
	// positive. Zero keeps Linux auto-tuning, which measured faster here
	// (see PERFORMANCE.md); set them only with a measurement.
	SocketReadBuffer  int
	SocketWriteBuffer int
	// DisableLanes keeps every message on the link's own socket. By
	// default a link opens a second socket to its peer, its bulk lane, the
	// first time a message of LaneThreshold bytes or more goes either way,
	// and such messages travel on it, so that small messages never wait
	// behind them in a kernel buffer (README, "Bulk lanes"). A server with
	// DisableLanes refuses lanes; its clients then interleave parts on one
	// socket.
	DisableLanes bool
	// LaneThreshold is the size from which a message goes on the bulk lane
	// (default DefaultLaneThreshold, at least 1 KiB).
	LaneThreshold int
	// Logger receives rare events (link failures, peers going away);
	// default: discard.
	Logger *slog.Logger

	// Resolver finds the endpoints of targets with a scheme ("dns:///",
	// "srv:///", "list:///", or schemes of its own; README, "Many
	// servers"); default DNSResolver{}, over net.DefaultResolver.
	Resolver Resolver
	// ResolveInterval is how often a Client looks such a target up again
	// (default DefaultResolveInterval, with ±20% jitter). It also looks it
	// up at once, at most every min(1 s, ResolveInterval), after a failed
	// dial, a lost link or a GOAWAY.
	ResolveInterval time.Duration
	// PlacementBalance bounds how many named logical connections a Client
	// places on one endpoint of a fleet: at most PlacementBalance times
	// the mean over the endpoints its target resolves to, ejected ones
	// included, so a lost endpoint does not raise it (but never less than
	// the healthy ones need to hold every ID), rounded up (default
	// DefaultPlacementBalance; at least 1). An ID whose endpoint is full
	// goes to the next one in its rendezvous order, so IDs spread evenly
	// while nearly all of them keep their place across membership changes
	// (README, "Many servers"). math.Inf(1) places by hashing alone.
	PlacementBalance float64
	// OnLinkEvent, if set, receives a Client's link and resolution events
	// (LinkEvent). It is called from the library's goroutines and must
	// return quickly.
	OnLinkEvent func(LinkEvent)
	// MaxLinkAge makes a Listener ask the client of each link to leave it
	// once it is this old (±10% jitter, so links of one client do not all
	// go at once; default 0: never): a GOAWAY after which the client moves
	// each logical connection to a new link at a quiet point of its own,
	// losing no message. New replicas of a fleet get their share this
	// way, and IDs return to their place after a replica was away. The
	// link is closed once its logical connections have left, or
	// MaxLinkAgeGrace (default DefaultMaxLinkAgeGrace) after the GOAWAY.
	MaxLinkAge      time.Duration
	MaxLinkAgeGrace time.Duration

	growMinRTT   time.Duration // tests only: 0 means growMinRTT (budget.go)
	laneIdle     time.Duration // tests only: 0 means laneIdle (lane.go)
	laneLoanWait time.Duration // tests only: 0 means laneLoanWait (lane.go)
}

// DefaultConfig returns a Config with every default filled in.
func DefaultConfig() *Config {
	c := &Config{}
	c.fill()
	return c
}

func (c *Config) fill() {
	setDefault(&c.IdleTimeout, DefaultIdleTimeout)
	setDefault(&c.MaxMessageSize, DefaultMaxMessageSize)
	setDefault(&c.StreamWindow, DefaultStreamWindow)
	setDefault(&c.LinkWindow, int(min(max(DefaultLinkWindow, 2*int64(c.StreamWindow)), maxWindow)))
	setDefault(&c.MaxStreamWindow, max(DefaultMaxStreamWindow, c.StreamWindow))
	setDefault(&c.MaxLinkWindow, max(DefaultMaxLinkWindow, c.LinkWindow))
	setDefault(&c.FrameSize, DefaultFrameSize)
	setDefault(&c.LaneThreshold, DefaultLaneThreshold)
	setDefault(&c.SendQueueLimit, DefaultSendQueueLimit)
	setDefault(&c.MaxStreams, DefaultMaxStreams)
	setDefault(&c.AcceptBacklog, DefaultAcceptBacklog)
	setDefault(&c.KeepAliveInterval, DefaultKeepAliveInterval)
	setDefault(&c.KeepAliveTimeout, 3*c.KeepAliveInterval)
	setDefault(&c.MaxControlFramesPerSecond, DefaultMaxControlFramesPerSecond)
	setDefault(&c.HandshakeTimeout, DefaultHandshakeTimeout)
	setDefault(&c.DialTimeout, DefaultDialTimeout)
	setDefault(&c.ReconnectBackoffMin, DefaultReconnectBackoffMin)
	setDefault(&c.ReconnectBackoffMax, DefaultReconnectBackoffMax)
	setDefault(&c.ResolveInterval, DefaultResolveInterval)
	setDefault(&c.MaxLinkAgeGrace, DefaultMaxLinkAgeGrace)
	setDefault(&c.PlacementBalance, DefaultPlacementBalance)
}

func setDefault[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

// Validate reports the first field out of range, naming it.
func (c *Config) Validate() error {
	r := *c
	r.fill()
	bad := func(field string, v any, why string) error {
		return fmt.Errorf("%w: %s = %v: %s", ErrInvalidConfig, field, v, why)
	}
	switch {
	case r.MaxMessageSize < InitialWindow || uint64(r.MaxMessageSize) > 1<<32-1:
		return bad("MaxMessageSize", r.MaxMessageSize, "must be in 65536..4294967295 (InitialWindow: a peer may send that much before it knows the limit)")
	case r.StreamWindow < InitialWindow || r.StreamWindow > 1<<31-1:
		return bad("StreamWindow", r.StreamWindow, "must be in 65536..2147483647 (at least InitialWindow)")
	case r.LinkWindow < InitialWindow || r.LinkWindow > 1<<31-1:
		return bad("LinkWindow", r.LinkWindow, "must be in 65536..2147483647 (at least InitialWindow)")
	case int64(r.LinkWindow) < 2*int64(r.StreamWindow):
		return bad("LinkWindow", r.LinkWindow, "must be at least twice StreamWindow (one logical connection whose reader is absent must not hold its link's credit)")
	case r.MaxStreamWindow < r.StreamWindow || r.MaxStreamWindow > maxWindow:
		return bad("MaxStreamWindow", r.MaxStreamWindow, "must be in StreamWindow..2147483647")
	case r.MaxLinkWindow < r.LinkWindow || r.MaxLinkWindow > maxWindow:
		return bad("MaxLinkWindow", r.MaxLinkWindow, "must be in LinkWindow..2147483647")
	case r.FrameSize < 1<<10 || r.FrameSize > 1<<30:
		return bad("FrameSize", r.FrameSize, "must be in 1024..1073741824")
	case r.LaneThreshold < 1<<10:
		return bad("LaneThreshold", r.LaneThreshold, "must be at least 1024")
	case r.MaxStreams < 0 || r.MaxStreams > 1<<30:
		return bad("MaxStreams", r.MaxStreams, "must be in 1..1073741824")
	case r.AcceptBacklog < 0:
		return bad("AcceptBacklog", r.AcceptBacklog, "must be positive")
	case r.KeepAliveInterval > 0 && r.KeepAliveTimeout < r.KeepAliveInterval:
		return bad("KeepAliveTimeout", r.KeepAliveTimeout, "must be at least KeepAliveInterval")
	case r.MaxControlFramesPerSecond < 0:
		return bad("MaxControlFramesPerSecond", r.MaxControlFramesPerSecond, "must be positive")
	case r.HandshakeTimeout < 0 || r.DialTimeout < 0:
		return bad("HandshakeTimeout/DialTimeout", r.HandshakeTimeout, "must not be negative")
	case r.ReconnectBackoffMin < 0 || r.ReconnectBackoffMax < r.ReconnectBackoffMin:
		return bad("ReconnectBackoffMax", r.ReconnectBackoffMax, "must be at least ReconnectBackoffMin >= 0")
	case r.SocketReadBuffer < 0 || r.SocketWriteBuffer < 0:
		return bad("SocketReadBuffer/SocketWriteBuffer", r.SocketReadBuffer, "must not be negative")
	case r.ResolveInterval < 0:
		return bad("ResolveInterval", r.ResolveInterval, "must not be negative")
	case r.MaxLinkAge < 0:
		return bad("MaxLinkAge", r.MaxLinkAge, "must not be negative")
	case r.MaxLinkAgeGrace < 0:
		return bad("MaxLinkAgeGrace", r.MaxLinkAgeGrace, "must not be negative")
	case !(r.PlacementBalance >= 1): // NaN too
		return bad("PlacementBalance", r.PlacementBalance, "must be at least 1 (math.Inf(1): no bound)")
	}
	return nil
}

// resolve returns a filled, validated copy (nil means defaults).
func (c *Config) resolve() (*Config, error) {
	if c == nil {
		return defaultResolved, nil
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	r := *c
	r.fill()
	return &r, nil
}

var defaultResolved = DefaultConfig()

var discardLogger = slog.New(slog.DiscardHandler)

func (c *Config) budget() *Budget {
	if c.Budget != nil {
		return c.Budget
	}
	return DefaultBudget
}

func (c *Config) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return discardLogger
}

func (c *Config) hello() hello {
	return hello{
		version:      protocolVersion,
		streamWindow: uint32(c.StreamWindow),
		linkWindow:   uint32(c.LinkWindow),
		maxMessage:   uint32(c.MaxMessageSize),
		maxStreams:   uint32(c.MaxStreams),
	}
}

// Connection is one logical, message-oriented connection. Client
// Connections (NewConnection*, Dial) share a pooled socket per address and
// reconnect on the next call after the socket is lost; server Connections
// (Wrap*, Listener.Accept) live as long as their socket.
//
// The empty ID is the catch-all of its socket: it receives every message
// whose ID no Connection on that socket holds, and Send replies to the
// logical connection whose message Receive returned last (use ReceiveFrom and
// SendTo when several goroutines share a catch-all).
type Connection struct {
	id       string
	catchAll bool
	idle     time.Duration
	cfg      *Config
	client   bool       // made by NewConnection* or Dial: reconnects
	addr     string     // client side: what to dial
	owner    *Client    // client side: the Client that made it
	poolCfg  *Config    // client side: the Config part of its pool key
	entry    *poolEntry // client side while held; nil on the server
	fleet    *fleet     // client side, for a target with a scheme: where it is placed
	wrapped  *wrapEntry // Wrap*: the socket registry entry we hold

	// Client side: life ends (and closed closes) on Close, which aborts a
	// dial in progress and wakes every call waiting for one.
	life   context.Context
	stop   context.CancelFunc
	closed chan struct{}

	bind atomic.Pointer[binding]
	// draining: the binding a client is moving away from (drain.go),
	// read before bind until the server closes it; drainEntry is its pool
	// entry, held until then (guarded by mu).
	draining   atomic.Pointer[binding]
	drainEntry *poolEntry
	reply      atomic.Pointer[stream] // catch-all: where Send goes
	carried    carried                // client: messages of a binding it left, received first

	// mu serializes binding, idle release and Close; it is never held
	// across a dial, a wait for the peer or a socket write (binding.go).
	mu       sync.Mutex
	closeErr error // non-nil once this Connection is finished for good
	held     bool  // holds a pool or registry reference
	lost     bool  // client: its socket was lost; the next bind is a reconnect
	// final: the first binding is the only one (NetConn: a byte stream
	// cannot resume on another socket); a client never reconnects.
	final      atomic.Bool
	attempt    *dialAttempt // client: the connect attempt in progress
	lastActive atomic.Int64
	idleTimer  *time.Timer
}

// NewConnection returns a client catch-all connection to address (the original
// API; the empty ID). idleTimeout 0 means DefaultIdleTimeout; a negative
// one disables the idle timeout. It never blocks and never returns nil: the
// dial starts at once in the background, and its errors surface on Send and
// Receive.
func NewConnection(address string, idleTimeout time.Duration) *Connection {
	return NewConnectionWithID(address, "", idleTimeout)
}

// NewConnectionWithID returns a client connection with the given ID to
// address, sharing the pooled socket of every other client connection to
// address. Like NewConnection it never blocks: it dials (or joins the pooled
// socket) in the background and announces the ID to the server at once, so a
// server may speak first.
func NewConnectionWithID(address string, id string, idleTimeout time.Duration) *Connection {
	return DefaultClient.Open(address, WithID(id), WithIdleTimeout(idleTimeout))
}

// Option configures Open, Dial and Wrap.
type Option func(*dialOptions)

type dialOptions struct {
	id   string
	idle time.Duration
	cfg  *Config
}

// WithID sets the logical connection's ID (default: the empty catch-all ID).
func WithID(id string) Option { return func(o *dialOptions) { o.id = id } }

// WithIdleTimeout overrides Config.IdleTimeout for this connection.
func WithIdleTimeout(d time.Duration) Option { return func(o *dialOptions) { o.idle = d } }

// WithConfig sets the link configuration (for Wrap, and for the
// package-level Open and Dial: DefaultClient's connections share a socket
// when they have the same address and the same *Config pointer). A Client
// made by NewClient has its own Config and refuses this option.
func WithConfig(cfg *Config) Option { return func(o *dialOptions) { o.cfg = cfg } }

// Open is DefaultClient.Open: a client connection returned at once, like
// NewConnectionWithID but with options (WithConfig for TLS or a custom
// Dialer). It never blocks and never returns nil.
func Open(address string, opts ...Option) *Connection {
	return DefaultClient.Open(address, opts...)
}

// Dial is DefaultClient.Dial: a client connection whose socket is connected
// and has heard the server's HELLO, so that a dial, TLS or handshake error
// is reported at once.
func Dial(ctx context.Context, address string, opts ...Option) (*Connection, error) {
	return DefaultClient.Dial(ctx, address, opts...)
}

func checkID(id string) error {
	if len(id) > maxIDLen {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrInvalidID, len(id), maxIDLen)
	}
	return nil
}

func idleOrDefault(d time.Duration, cfg *Config) time.Duration {
	if d == 0 {
		return cfg.IdleTimeout
	}
	return d
}

// ID returns the logical connection's ID ("" for a catch-all).
func (c *Connection) ID() string { return c.id }

// LocalAddr returns the local address of the socket c is bound to, or nil
// while it has none (a client between sockets, or closed).
func (c *Connection) LocalAddr() net.Addr {
	if b := c.bind.Load(); b != nil {
		return b.link.conn.LocalAddr()
	}
	return nil
}

// RemoteAddr returns the peer's address on the socket c is bound to, or nil
// while it has none. On a server it tells which client this is.
func (c *Connection) RemoteAddr() net.Addr {
	if b := c.bind.Load(); b != nil {
		return b.link.conn.RemoteAddr()
	}
	return nil
}

// TLSConnectionState returns the TLS state of c's socket (the peer's
// certificates under mutual TLS, the negotiated version): ok is false if the
// socket is not TLS, c is not bound to one, or the TLS handshake is not
// complete yet.
func (c *Connection) TLSConnectionState() (state tls.ConnectionState, ok bool) {
	b := c.bind.Load()
	if b == nil {
		return state, false
	}
	tc, isTLS := b.link.conn.(*tls.Conn)
	if !isTLS {
		return state, false
	}
	state = tc.ConnectionState()
	return state, state.HandshakeComplete
}

// Send sends data as one message. It returns once the message is committed
// to the socket's ordered write queue: up to 32 KiB (and anything before the
// peer's HELLO) it is copied there; larger messages are written from data,
// in parts above Config.FrameSize, before Send returns. Either way data may
// be reused when Send returns. It never waits for the peer's HELLO within
// InitialWindow, and waits while the receiver's window is full
// (backpressure); use SendContext to bound that wait.
func (c *Connection) Send(data []byte) error {
	return c.SendContext(context.Background(), data)
}

// SendContext is Send with cancellation: if ctx has ended, or ends before
// the message was queued for writing, it returns ctx's error and nothing
// was sent.
func (c *Connection) SendContext(ctx context.Context, data []byte) error {
	return c.sendTo(ctx, nil, data)
}

// SendTo sends data tagged with id on this connection's socket; a catch-all
// uses it to answer a specific logical connection (the id ReceiveFrom
// returned). It is an error if this side cannot hold another ID.
func (c *Connection) SendTo(ctx context.Context, id string, data []byte) error {
	if err := checkID(id); err != nil {
		return err
	}
	return c.sendTo(ctx, &id, data)
}

func (c *Connection) sendTo(ctx context.Context, to *string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(data) > c.cfg.MaxMessageSize {
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrMessageTooLarge, len(data), c.cfg.MaxMessageSize)
	}
	b, err := c.current(ctx, true)
	if err != nil {
		return err
	}
	st := b.st
	switch {
	case to != nil:
		st, err = b.link.sendStream(*to)
	case b.ca != nil:
		if st = c.reply.Load(); st == nil || st.link != b.link {
			st, err = b.link.sendStream("")
		}
	}
	if err != nil {
		return err
	}
	err = b.link.send(ctx.Done(), st, b.source().box(), data, c.final.Load())
	if err == errMoved {
		return c.sendTo(ctx, to, data) // bind is the new binding now
	}
	if err != nil {
		return c.afterError(ctx, b, err)
	}
	c.touch()
	return nil
}

// Receive returns the next message in a new slice of its own, which the
// caller keeps. It blocks until one arrives, the connection is closed or
// idles out, or the socket is lost. To reuse a buffer, use ReceiveAppend.
func (c *Connection) Receive() ([]byte, error) {
	return c.ReceiveContext(context.Background())
}

// ReceiveContext is Receive with cancellation: if ctx has ended, or ends
// before a message arrives, it returns ctx's error and no message is taken.
func (c *Connection) ReceiveContext(ctx context.Context) ([]byte, error) {
	_, data, err := c.ReceiveFrom(ctx)
	return data, err
}

// ReceiveFrom returns the next message and the ID it was sent with (for a
// catch-all, the logical connection it came from).
func (c *Connection) ReceiveFrom(ctx context.Context) (string, []byte, error) {
	from, m, inPlace, err := c.receive(ctx, dest{fresh: true})
	if err != nil {
		return "", nil, err
	}
	if inPlace || m.pooled == nil {
		return from, m.data, nil // a slice of its own (payloadFor, or large): ownership passes to the caller
	}
	out := make([]byte, len(m.data))
	copy(out, m.data)
	m.release()
	return from, out, nil
}

// ReceiveAppend appends the next message to dst and returns the extended
// slice. With enough capacity in dst it does not allocate: the pooled path
// for callers that reuse their buffer. When the call reads the socket for
// itself (when nobody else does; with a ctx that can be canceled, only on
// Linux TCP and only what has arrived) and the message fits in dst's spare
// capacity, it is read straight into it, saving a copy; so is a message
// on the bulk lane that fits, while the call waits for it (README, "Bulk
// lanes"), and one that fits and that another goroutine, reading the
// socket while the call waits, already holds whole. So the bytes of dst
// beyond len(dst) may be overwritten even by a call that returns an
// error, but never after it returned.
func (c *Connection) ReceiveAppend(ctx context.Context, dst []byte) ([]byte, error) {
	_, m, inPlace, err := c.receive(ctx, dest{buf: dst[len(dst):cap(dst)]})
	if err != nil {
		return dst, err
	}
	if inPlace { // read into dst's spare capacity already
		return dst[:len(dst)+len(m.data)], nil
	}
	dst = append(dst, m.data...)
	m.release()
	return dst, nil
}

// receive takes the next message; into is where it may be read (dest);
// inPlace: m.data is part of into.buf, or the new slice into.fresh asked
// for.
func (c *Connection) receive(ctx context.Context, into dest) (id string, m message, inPlace bool, err error) {
	if err := ctx.Err(); err != nil {
		return "", message{}, false, err
	}
	// Messages kept from a binding this client left come first; they are
	// looked for again once the binding is known (a Send may have left
	// the old one meanwhile) and when it fails (one of ours may have).
	for {
		if from, m, ok := c.carried.pop(); ok {
			return c.received(from, m, false)
		}
		if d := c.draining.Load(); d != nil {
			// Moving (drain.go): the old binding first, until its end.
			from, m, inPlace, rerr := receive(d.source(), ctx, into)
			if rerr == nil {
				return c.received(from, m, inPlace)
			}
			if rerr == errCanceled {
				return "", message{}, false, ctx.Err()
			}
			c.finishDraining(d)
			continue
		}
		b, err := c.current(ctx, false)
		if err == nil {
			if c.draining.Load() != nil {
				// A move began since draining was looked at (it is set
				// before bind): the old binding comes first.
				continue
			}
			if from, m, ok := c.carried.pop(); ok {
				return c.received(from, m, false)
			}
			from, m, inPlace, rerr := receive(b.source(), ctx, into)
			if rerr == nil {
				return c.received(from, m, inPlace)
			}
			if b.moved.Load() && rerr != errCanceled {
				continue // b's end belongs to a move, not to c
			}
			err = c.afterError(ctx, b, rerr)
		}
		if from, m, ok := c.carried.pop(); ok {
			return c.received(from, m, false)
		}
		return "", message{}, false, err
	}
}

// received ends a receive call that took m from its record from.
func (c *Connection) received(from *stream, m message, inPlace bool) (string, message, bool, error) {
	if c.catchAll {
		c.reply.Store(from)
	}
	c.touch()
	return from.id, m, inPlace, nil
}

// Close ends the logical connection: the peer is told, blocked calls return
// ErrClosed, and the pooled socket closes (in the background) when its last
// user is gone. Close never blocks on the network: it is prompt in every
// state, a dial or a wait for the peer's HELLO included. It is idempotent
// and always returns nil.
func (c *Connection) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeErr != nil && c.client {
		return nil
	}
	if c.client {
		c.closeErr = ErrClosed
		c.stop()
		close(c.closed)
		c.owner.forget(c)
		if c.fleet != nil {
			c.fleet.forget(c)
			c.fleet.release()
		}
	}
	c.dropDrainingLocked(c.draining.Load())
	if b := c.bind.Load(); b != nil {
		c.unbindLocked(b, ErrClosed)
	}
	c.carried.release()
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	if c.client {
		if c.attempt == nil {
			c.releaseClientLocked(nil) // held across a failed dial
		} // else the attempt releases it when it ends
		return nil
	}
	c.finishServerLocked(ErrClosed)
	return nil
}
