// SPDX-License-Identifier: MIT

package tcpconn

import "net"

// tuneCommon applies the portable socket options. SO_RCVBUF/SO_SNDBUF turn
// off Linux auto-tuning, so they are set only when configured.
func tuneCommon(c *net.TCPConn, cfg *Config) error {
	if err := c.SetNoDelay(true); err != nil {
		return err
	}
	if cfg.SocketReadBuffer > 0 {
		if err := c.SetReadBuffer(cfg.SocketReadBuffer); err != nil {
			return err
		}
	}
	if cfg.SocketWriteBuffer > 0 {
		return c.SetWriteBuffer(cfg.SocketWriteBuffer)
	}
	return nil
}
