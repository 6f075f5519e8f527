//go:build crashpoint && unix

package crashpoint

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Enabled reports whether Hit can kill: true in this build.
const Enabled = true

var (
	armOnce sync.Once
	armed   string // the name of the armed crash point, "" for none
	at      int    // the call of Hit(armed) that kills

	mu    sync.Mutex
	calls int
)

// arm reads EnvVar once: "name:N" with N >= 1.
func arm() {
	name, n, ok := strings.Cut(os.Getenv(EnvVar), ":")
	if !ok || name == "" {
		return
	}
	if v, err := strconv.Atoi(n); err == nil && v >= 1 {
		armed, at = name, v
	}
}

// Hit counts a call of the crash point name and sends SIGKILL to the
// process when it is the call RECONCILER_CRASH_AT names. It does not
// return from that call.
func Hit(name string) {
	armOnce.Do(arm)
	if armed == "" || name != armed {
		return
	}
	mu.Lock()
	calls++
	kill := calls == at
	mu.Unlock()
	if !kill {
		return
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	// The signal is delivered asynchronously: never run on meanwhile.
	for {
		time.Sleep(time.Hour)
	}
}
