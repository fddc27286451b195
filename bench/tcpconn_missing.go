//go:build !tcpconn

package bench

// Until the library builds, the tcpconn transport is compiled only with
// -tags tcpconn; without it the bench runs raw, yamux and smux.
func tcpconnTransport() Transport { return Transport{} }
