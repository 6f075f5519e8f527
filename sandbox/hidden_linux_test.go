package sandbox

import (
	"strings"
	"testing"
)

func TestHidden(t *testing.T) {
	dir := t.TempDir()
	if _, err := hidden([]string{dir}, []string{"/usr"}, "/nonexistent-ws", false); err != nil {
		t.Errorf("a path nobody sees needs no cover: %v", err)
	}
	if _, err := hidden([]string{"/usr/bin"}, []string{"/usr"}, dir, false); err == nil || !strings.Contains(err.Error(), "no mount namespace") {
		t.Errorf("without a view: %v", err)
	}
	got, err := hidden([]string{"/usr/bin", "/nonexistent"}, []string{"/usr"}, dir, true)
	if err != nil || strings.Join(got, " ") != "/usr/bin" {
		t.Errorf("with a view: %v %v", got, err)
	}
}
