package protocol

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a connection, flusher or
// maintenance-watcher goroutine behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
