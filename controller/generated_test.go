package controller_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGeneratedCRDIsCurrent regenerates the CRD and the deepcopy code from
// the Go types with the pinned controller-gen (api/v1's go:generate lines)
// into a temporary directory and compares them with what is committed, so
// a change to the types cannot ship with a stale CRD.
func TestGeneratedCRDIsCurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("builds controller-gen")
	}
	out := t.TempDir()
	cmd := exec.Command("go", "run", "sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0",
		"crd", "paths=./...", "output:crd:artifacts:config="+out)
	cmd.Dir = "../api/v1"
	if b, err := cmd.CombinedOutput(); err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("controller-gen did not run here (%v): %s", err, b)
		}
		t.Fatalf("controller-gen: %v\n%s", err, b)
	}
	gen, err := filepath.Glob(filepath.Join(out, "*.yaml"))
	if err != nil || len(gen) == 0 {
		t.Fatalf("controller-gen wrote no CRD: %v", err)
	}
	for _, g := range gen {
		want, err := os.ReadFile(g)
		if err != nil {
			t.Fatal(err)
		}
		committed := filepath.Join("../config/crd/bases", filepath.Base(g))
		got, err := os.ReadFile(committed)
		if err != nil {
			t.Fatalf("%s is generated but not committed: %v", committed, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is not what controller-gen makes of api/v1: run go generate ./api/...", committed)
		}
	}
}

// TestGeneratedRBACIsCurrent regenerates the controller's ClusterRole from
// the +kubebuilder:rbac markers of this package (the go:generate line in
// reconciler.go) and compares it with config/rbac/role.yaml, so a new
// permission cannot ship without the manifest, nor the manifest grant more
// than the code declares.
func TestGeneratedRBACIsCurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("builds controller-gen")
	}
	out := t.TempDir()
	cmd := exec.Command("go", "run", "sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0",
		"rbac:roleName=reconciler-controller", "paths=./", "output:rbac:artifacts:config="+out)
	if b, err := cmd.CombinedOutput(); err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("controller-gen did not run here (%v): %s", err, b)
		}
		t.Fatalf("controller-gen: %v\n%s", err, b)
	}
	want, err := os.ReadFile(filepath.Join(out, "role.yaml"))
	if err != nil {
		t.Fatalf("controller-gen wrote no role: %v", err)
	}
	got, err := os.ReadFile("../config/rbac/role.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("config/rbac/role.yaml is not what controller-gen makes of the +kubebuilder:rbac markers: run go generate ./controller/...\n--- generated:\n%s", want)
	}
}
