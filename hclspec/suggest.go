package hclspec

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/agext/levenshtein"
)

// suggest returns " Did you mean %q?" for the closest known name, or "".
func suggest(given string, known []string) string {
	best, bestDist := "", 3
	for _, k := range known {
		if d := levenshtein.Distance(given, k, nil); d < bestDist {
			best, bestDist = k, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" Did you mean %q?", best)
}

func errorsIsNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
