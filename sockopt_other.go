// SPDX-License-Identifier: MIT

//go:build !linux

package tcpconn

import "net"

// tuneTCP: TCP_USER_TIMEOUT is Linux-only; elsewhere the keepalive PINGs
// alone detect a dead peer.
func tuneTCP(c *net.TCPConn, cfg *Config) error { return tuneCommon(c, cfg) }
