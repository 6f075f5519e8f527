package hclspec

import (
	"fmt"
	"os"
	"testing"
)

func TestZZScratch(t *testing.T) {
	s, diags := Load(os.DirFS("../examples/repo-layout"), Options{})
	for _, d := range diags {
		fmt.Println(d)
	}
	for _, a := range s.Agents {
		fmt.Printf("%s %q\n", a.Name, a.Source)
	}
	for _, p := range s.Policies {
		fmt.Printf("%s %q\n", p.Name, p.Source)
	}
}
