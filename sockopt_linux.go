// SPDX-License-Identifier: MIT

package tcpconn

import (
	"net"

	"golang.org/x/sys/unix"
)

// tuneTCP sets TCP_NODELAY explicitly, the socket buffers only when asked,
// and TCP_USER_TIMEOUT to the keepalive timeout so that writes a dead peer
// never acknowledges fail in seconds rather than the kernel's ~15 minutes.
func tuneTCP(c *net.TCPConn, cfg *Config) error {
	if err := tuneCommon(c, cfg); err != nil {
		return err
	}
	if cfg.KeepAliveInterval <= 0 {
		return nil
	}
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(cfg.KeepAliveTimeout.Milliseconds()))
	})
	if err != nil {
		return err
	}
	return serr
}
