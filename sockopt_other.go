// SPDX-License-Identifier: MIT

//go:build !linux

package tcpconn

import "net"

// tuneTCP: TCP_USER_TIMEOUT is Linux-only; elsewhere the keepalive PINGs
// alone detect a dead peer.
func tuneTCP(c *net.TCPConn, cfg *Config) error { return tuneCommon(c, cfg) }

// tuneLane tunes a bulk lane like a link's socket.
func tuneLane(c *net.TCPConn, cfg *Config) error { return tuneCommon(c, cfg) }

// unreadBytes: only Linux tells (SIOCINQ).
func unreadBytes(*net.TCPConn) (int, bool) { return 0, false }
