//go:build linux

package sandbox

import (
	"strings"
	"testing"
)

// TestCheckPeer: the helper refuses a program of another protocol, and of
// another revision when both builds recorded theirs.
func TestCheckPeer(t *testing.T) {
	was := buildRevision
	defer func() { buildRevision = was }()
	buildRevision = func() string { return "abc" }
	for _, tc := range []struct {
		sp   spec
		want string
	}{
		{spec{Protocol: protocol, Revision: "abc"}, ""},
		{spec{Protocol: protocol}, ""},
		{spec{Protocol: protocol, Revision: "def"}, "built from revision abc, the reconciler from def"},
		{spec{Protocol: "0", Revision: "abc"}, `speaks protocol "1", the reconciler "0"`},
	} {
		err := checkPeer(&tc.sp)
		if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("checkPeer(%+v) = %v, want %q", tc.sp, err, tc.want)
		}
	}
	buildRevision = func() string { return "" }
	if err := checkPeer(&spec{Protocol: protocol, Revision: "def"}); err != nil {
		t.Errorf("a helper without a revision refused: %v", err)
	}
}
