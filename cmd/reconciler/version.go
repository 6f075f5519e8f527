package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// version is stamped at build time with
// -ldflags "-X main.version=$(git describe --always --dirty)" (make build
// and the Dockerfile do); empty, the module version from the build info
// is used.
var version string

// versionInfo is what 'reconciler version' prints.
type versionInfo struct {
	Version string `json:"version"`
	// Module is the main module's path and version as the Go toolchain
	// recorded them ("(devel)" for a build without a version).
	Module        string `json:"module,omitempty"`
	ModuleVersion string `json:"module_version,omitempty"`
	// Revision, Time and Modified are the VCS state the binary was built
	// from (vcs.revision, vcs.time, vcs.modified), when the toolchain
	// recorded it (go build in a git checkout; not go run or go test).
	Revision string `json:"revision,omitempty"`
	Time     string `json:"time,omitempty"`
	Modified *bool  `json:"modified,omitempty"`
	Go       string `json:"go"`
	Platform string `json:"platform"`
}

// buildVersion reads the version from the stamp and the binary's build
// information.
func buildVersion() versionInfo {
	v := versionInfo{Version: version, Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		v.Module, v.ModuleVersion = bi.Main.Path, bi.Main.Version
		if bi.GoVersion != "" {
			v.Go = bi.GoVersion
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				v.Revision = s.Value
			case "vcs.time":
				v.Time = s.Value
			case "vcs.modified":
				m := s.Value == "true"
				v.Modified = &m
			}
		}
	}
	if v.Version == "" {
		v.Version = v.ModuleVersion
	}
	if v.Version == "" {
		v.Version = "(devel)"
	}
	return v
}

func cmdVersion(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("version", "version [--format text|json]", stderr)
	format := fs.String("format", "text", "output format: text or json")
	if code, ok := parseNoArgs(fs, args); !ok {
		return code
	}
	if *format != "text" && *format != "json" {
		return usageError(stderr, "--format %q: use text or json", *format)
	}
	v := buildVersion()
	if *format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(v)
		return exitOK
	}
	fmt.Fprintf(stdout, "reconciler %s\n", v.Version)
	if v.Module != "" {
		fmt.Fprintf(stdout, "  module    %s %s\n", v.Module, v.ModuleVersion)
	}
	if v.Revision != "" {
		fmt.Fprintf(stdout, "  revision  %s\n", v.Revision)
	}
	if v.Time != "" {
		fmt.Fprintf(stdout, "  time      %s\n", v.Time)
	}
	if v.Modified != nil {
		fmt.Fprintf(stdout, "  modified  %t\n", *v.Modified)
	}
	fmt.Fprintf(stdout, "  go        %s %s\n", v.Go, v.Platform)
	return exitOK
}
