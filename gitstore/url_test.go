package gitstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentgitops/reconciler/gitstore/gittest"
)

func TestNormalizeURL(t *testing.T) {
	t.Parallel()
	bare := gittest.NewBare(t, "")
	work := gittest.Clone(t, bare)
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	relBare, err := filepath.Rel(wd, bare)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		in       string
		want     string
		wantErr  string
		notFound bool
	}{
		{in: bare, want: bare},
		{in: bare + "/", want: bare},
		{in: relBare, want: bare},
		{in: "file://" + bare, want: bare},
		{in: "file://localhost" + bare, want: bare},
		{in: work, want: filepath.Join(work, ".git")},
		{in: "https://example.com/org/repo.git", want: "https://example.com/org/repo.git"},
		{in: "http://token:s3cret@example.com/repo", want: "http://token:s3cret@example.com/repo"},
		{in: "ssh://git@example.com/org/repo.git", want: "ssh://git@example.com/org/repo.git"},
		{in: "git@github.com:org/repo.git", want: "git@github.com:org/repo.git"},
		{in: "", wantErr: "empty"},
		{in: "  ", wantErr: "empty"},
		{in: "ftp://example.com/repo", wantErr: "unsupported scheme"},
		{in: "git://example.com/repo", wantErr: "unsupported scheme"},
		{in: "https:///repo", wantErr: "missing host"},
		{in: "file://remote-host/repo", wantErr: "remote host"},
		{in: "http://user:s3cret@exa mple.com/", wantErr: "invalid character"},
		{in: filepath.Join(bare, "missing"), wantErr: "no such file", notFound: true},
		{in: "missing-relative", wantErr: "no such file", notFound: true},
		{in: file, wantErr: "not a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := NormalizeURL(tt.in)
			if tt.wantErr == "" {
				if err != nil || got != tt.want {
					t.Errorf("NormalizeURL = %q, %v; want %q", got, err, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("NormalizeURL error = %v, want %q", err, tt.wantErr)
			}
			if errors.Is(err, ErrNotFound) != tt.notFound {
				t.Errorf("errors.Is(err, ErrNotFound) = %v, want %v", !tt.notFound, tt.notFound)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error %q leaks the password", err)
			}
		})
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"https://user:s3cret@example.com/repo.git", "https://user:xxxxx@example.com/repo.git"},
		{"https://x-access-token:s3cret@example.com/repo.git", "https://x-access-token:xxxxx@example.com/repo.git"},
		{"https://ghp_s3cret@example.com/repo.git", "https://xxxxx@example.com/repo.git"},
		{"https://example.com/repo.git", "https://example.com/repo.git"},
		{"ssh://git@example.com/repo.git", "ssh://git@example.com/repo.git"},
		{"ssh://git:s3cret@example.com/repo.git", "ssh://git:xxxxx@example.com/repo.git"},
		{"git@github.com:org/repo.git", "git@github.com:org/repo.git"},
		{"/srv/git/repo.git", "/srv/git/repo.git"},
		{"http://user:s3cret@exa mple.com/repo", "http://xxxxx@exa mple.com/repo"},
		{"", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := Redact(tt.in); got != tt.want {
				t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestRedactError(t *testing.T) {
	t.Parallel()
	cause := errors.New("cause")
	err := redactError(fmt.Errorf("get https://ghp_s3cret@example.com/x: %w", cause), "https://ghp_s3cret@example.com/x")
	if strings.Contains(err.Error(), "s3cret") || !errors.Is(err, cause) {
		t.Errorf("redactError = %q (is cause: %v)", err, errors.Is(err, cause))
	}
	plain := errors.New("nothing to hide")
	if got := redactError(plain, "https://u:p@example.com/x"); got != plain {
		t.Errorf("redactError changed an error without credentials: %v", got)
	}
}
