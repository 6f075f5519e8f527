// Package hclspec loads the desired state of a reconciler repository: the
// providers, agents, policies and reviewer groups written in HCL.
//
// Load reads providers.hcl, reviewers.hcl, agents/*.hcl and policies/*.hcl
// (policies/*_test.hcl excluded) from a file system rooted at the
// repository's top, and returns every problem it finds as hcl.Diagnostics
// with file:line:col ranges, never only the first. A Spec is returned only
// when there are no errors: callers keep their last good Spec otherwise.
//
// Decoded values keep their hcl.Range, so checks made after decoding
// (duplicate names, unknown providers or reviewer groups, bad globs) point at
// the attribute a person has to edit.
package hclspec
