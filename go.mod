module github.com/pulsyflux/tcp-conn

go 1.25.0

require (
	github.com/valyala/bytebufferpool v1.0.0
	golang.org/x/sys v0.47.0
)

require go.uber.org/goleak v1.3.0

require (
	github.com/google/uuid v1.6.0
	github.com/miekg/dns v1.1.73
)

require golang.org/x/net v0.57.0 // indirect
