module github.com/pulsyflux/tcp-conn

go 1.22

require (
	github.com/google/uuid v1.6.0 // indirect
	github.com/valyala/bytebufferpool v1.0.0 // indirect
	go.uber.org/goleak v1.3.0 // indirect
	golang.org/x/sys v0.30.0 // indirect
)
