package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestPolicyTestExitCodes(t *testing.T) {
	const examples = "../../examples/repo-layout"
	tests := []struct {
		args     []string
		code     int
		out, err string
	}{
		{[]string{"policy"}, exitUsage, "", "Usage: reconciler policy test"},
		{[]string{"policy", "-h"}, exitOK, "", "Usage: reconciler policy test"},
		{[]string{"policy", "lint"}, exitUsage, "", `unknown policy command "lint"`},
		{[]string{"policy", "test", "-h"}, exitOK, "", `also when there are no tests ("no tests found")`},
		{[]string{"policy", "test", "a", "b"}, exitUsage, "", "one directory, got 2 arguments"},
		{[]string{"policy", "test", examples, "--bogus"}, exitUsage, "", "flag provided but not defined: -bogus"},
		{[]string{"policy", "test", "--format", "xml", examples}, exitUsage, "", "use text or json"},
		{[]string{"policy", "test", "--run", "(", examples}, exitUsage, "", `--run "("`},
		{[]string{"policy", "test", "/nonexistent"}, exitFail, "", `"/nonexistent" is not a directory`},
		{[]string{"policy", "test", examples}, exitOK, "\n8 passed, 0 failed\n", ""},
		{[]string{"policy", "test", examples, "--run", "^nothing$"}, exitOK, "no tests match --run \"^nothing$\"\n0 passed, 0 failed\n", ""},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(context.Background(), tt.args, &out, &errb)
			if code != tt.code || !strings.Contains(out.String(), tt.out) || !strings.Contains(errb.String(), tt.err) {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d, %q and %q", code, out.String(), errb.String(), tt.code, tt.out, tt.err)
			}
		})
	}
}
