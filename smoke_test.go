package tcpconn

import (
	"bytes"
	"testing"
)

func TestSmokeEcho(t *testing.T) {
	ln := listenTCP(t)
	serveEcho(t, ln)
	a := NewConnectionWithID(ln.Addr().String(), "user-session", 0)
	b := NewConnectionWithID(ln.Addr().String(), "admin-session", 0)
	defer a.Close()
	defer b.Close()
	for i := 0; i < 100; i++ {
		mustSend(t, a, []byte("user data"))
		mustSend(t, b, []byte("admin data"))
		if got := mustReceive(t, a); !bytes.Equal(got, []byte("user data")) {
			t.Fatalf("a got %q", got)
		}
		if got := mustReceive(t, b); !bytes.Equal(got, []byte("admin data")) {
			t.Fatalf("b got %q", got)
		}
	}
	big := bytes.Repeat([]byte{7}, 3<<20)
	mustSend(t, a, big)
	if got := mustReceive(t, a); !bytes.Equal(got, big) {
		t.Fatalf("big mismatch")
	}
	t.Logf("%+v", ReadStats())
}
