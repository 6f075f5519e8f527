//go:build !crashpoint || !unix

package crashpoint

// Enabled reports whether Hit can kill: false in this build.
const Enabled = false

// Hit does nothing: the binary was built without the crashpoint tag.
func Hit(name string) {}
