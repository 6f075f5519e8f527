package reconcile

import (
	"fmt"
	"slices"
	"strings"

	"github.com/agentgitops/reconciler/forge"
	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/hclspec"
)

// ReasonForgeNotAllowed stalls a reconciler whose spec names a forge its
// operator did not allow (Config.ForgeAllowed): the forge's token would go
// to a server someone with push access chose.
const ReasonForgeNotAllowed = "ForgeNotAllowed"

// ForgeFactory builds the pull-request forge a spec's forge block names:
// it resolves the block's token (the variable or file it names) and
// connects. Called only for a base URL the operator allowed.
type ForgeFactory func(f *hclspec.Forge, repo *gitstore.Repo) (Forge, error)

// forgeKey identifies a forge block's configuration: a change of any part
// builds the forge again.
func forgeKey(f *hclspec.Forge) string {
	if f == nil {
		return ""
	}
	app := ""
	if f.App != nil {
		app = fmt.Sprintf("%d/%d/%s", f.App.ID, f.App.InstallationID, f.App.PrivateKeyFile)
	}
	return strings.Join([]string{f.Kind, f.BaseURL, f.Owner, f.Name, f.TokenEnv, f.TokenFile, app, strings.Join(f.Labels, ",")}, "\x00")
}

// ForgeAllowed reports whether the operator's allow-list admits a forge's
// base URL: equal once both end in a slash, scheme and host compared
// case-insensitively.
func ForgeAllowed(allowed []string, baseURL string) bool {
	norm := func(s string) string {
		s = strings.TrimSpace(s)
		if !strings.HasSuffix(s, "/") {
			s += "/"
		}
		if i := strings.Index(s, "://"); i > 0 {
			j := strings.IndexByte(s[i+3:], '/') + i + 3
			s = strings.ToLower(s[:j]) + s[j:]
		}
		return s
	}
	return slices.ContainsFunc(allowed, func(a string) bool { return norm(a) == norm(baseURL) })
}

// useForge puts in force the forge the spec names: the git-native one
// without a forge block, else the factory's, built once per configuration.
// A Config.Forge set by the caller always wins. A forge block whose base
// URL the operator did not allow stalls the pass before anything is
// proposed: proposing on the git-native flow instead would bypass the
// reviews the team set up, and building it would send the token away.
func (r *Reconciler) useForge(spec *hclspec.Spec) error {
	if r.cfg.Forge != nil {
		return nil
	}
	f := spec.Forge
	key := forgeKey(f)
	if key == r.forgeKey && r.forge != nil {
		return nil
	}
	if f == nil {
		r.forge, r.forgeKey = forge.NewGit(r.repo), key
		return nil
	}
	where := f.DeclRange.String()
	if !ForgeAllowed(r.cfg.ForgeAllowed, f.BaseURL) {
		return &StalledError{Reason: ReasonForgeNotAllowed, Err: fmt.Errorf(
			"%s: forge %s at %s is not allowed by this reconciler's operator: its token is sent only to a base URL given with --forge-allow (allowed: %s)",
			where, f.Kind, f.BaseURL, allowedList(r.cfg.ForgeAllowed))}
	}
	if r.cfg.ForgeFactory == nil {
		return &StalledError{Reason: ReasonForgeNotAllowed, Err: fmt.Errorf("%s: forge %s: this reconciler has no %s support configured", where, f.Kind, f.Kind)}
	}
	fg, err := r.cfg.ForgeFactory(f, r.repo)
	if err != nil {
		return fmt.Errorf("%s: forge %s at %s: %w", where, f.Kind, f.BaseURL, err)
	}
	r.forge, r.forgeKey = fg, key
	return nil
}

func allowedList(a []string) string {
	if len(a) == 0 {
		return "none"
	}
	return strings.Join(a, ", ")
}
