module github.com/pulsyflux/tcp-conn/bench

go 1.25.0

require (
	github.com/hashicorp/yamux v0.1.2
	github.com/pulsyflux/tcp-conn v0.0.0
	github.com/xtaci/smux v1.5.58
)

require (
	github.com/google/uuid v1.6.0 // indirect
	github.com/valyala/bytebufferpool v1.0.0 // indirect
	golang.org/x/sys v0.47.0 // indirect
)

replace github.com/pulsyflux/tcp-conn => ../
