// SPDX-License-Identifier: MIT

package tcpconn

import (
	"math"
	"net"

	"golang.org/x/sys/unix"
)

// tuneTCP sets TCP_NODELAY explicitly, the socket buffers only when asked,
// TCP_USER_TIMEOUT to the keepalive timeout so that writes a dead peer
// never acknowledges fail in seconds rather than the kernel's ~15 minutes,
// and TCP_NOTSENT_LOWAT to SendQueueLimit.
func tuneTCP(c *net.TCPConn, cfg *Config) error {
	if err := tuneCommon(c, cfg); err != nil {
		return err
	}
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		if cfg.KeepAliveInterval > 0 {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(cfg.KeepAliveTimeout.Milliseconds()))
		}
		if serr == nil && cfg.SendQueueLimit > 0 {
			// The kernel holds at most this much not yet sent, so a small
			// message or a PING queued now is not behind megabytes of bulk
			// data in the socket's buffer: the write scheduler chooses.
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, cfg.SendQueueLimit)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// unreadBytes is what the kernel holds received for c and not yet read
// (SIOCINQ); ok is false where it cannot tell.
func unreadBytes(c *net.TCPConn) (n int, ok bool) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, false
	}
	var ierr error
	if err := raw.Control(func(fd uintptr) { n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCINQ) }); err != nil || ierr != nil {
		return 0, false
	}
	return n, true
}

// tuneLane tunes a bulk lane like a link's socket, but without
// TCP_NOTSENT_LOWAT: nothing small waits behind its bytes, and a bound
// would only cost it wakeups. An accepted lane had it set as a link's
// socket first, so it is lifted, not just left out.
func tuneLane(c *net.TCPConn, cfg *Config) error {
	lane := *cfg
	lane.SendQueueLimit = -1
	if err := tuneTCP(c, &lane); err != nil {
		return err
	}
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, math.MaxInt32)
	})
	if err != nil {
		return err
	}
	return serr
}
