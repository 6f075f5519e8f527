package hclspec

import (
	"net/url"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// Forge kinds.
const (
	ForgeGitea  = "gitea"
	ForgeGitHub = "github"
)

// DefaultGitHubAPI is the API base of a github forge without base_url.
const DefaultGitHubAPI = "https://api.github.com/"

// Forge is the `forge "<kind>"` block of providers.hcl: proposals become
// pull requests on a Gitea or GitHub repository, and approving reviews by
// reviewers' forge_login count as approvals. Without one, proposals are
// branches and signed merges the approvals (the git-native forge).
//
// The block names where the token comes from, never the token. Since
// anyone who can push to the protected branch can edit it, the reconciler
// sends the token only to a base URL its operator allowed (see
// reconcile.Config.ForgeAllowed): a pushed block pointing elsewhere cannot
// make it hand the token over.
type Forge struct {
	Kind string
	// BaseURL is the forge's web root (Gitea: https://gitea.example.com/)
	// or API base (GitHub: https://api.github.com/, or a GitHub Enterprise
	// Server's https://host/api/v3/), ending in a slash.
	BaseURL string
	// Owner and Name are the repository ("owner/name").
	Owner, Name string
	// TokenEnv names the environment variable holding the token; TokenFile
	// is an absolute path to a file holding it. App is a GitHub App's
	// installation instead. Exactly one is set.
	TokenEnv, TokenFile string
	App                 *GitHubApp
	// Labels are added to every pull request the reconciler opens.
	Labels []string

	DeclRange    hcl.Range
	BaseURLRange hcl.Range
}

// GitHubApp is a forge's `app` block: the reconciler authenticates as an
// installation of a GitHub App.
type GitHubApp struct {
	ID, InstallationID int64
	// PrivateKeyFile is an absolute path to the App's PEM private key.
	PrivateKeyFile string
}

var forgeSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "base_url"}, {Name: "repository", Required: true},
		{Name: "token_env"}, {Name: "token_file"}, {Name: "labels"},
	},
	Blocks: []hcl.BlockHeaderSchema{{Type: "app"}},
}

var appSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "id", Required: true}, {Name: "installation_id", Required: true}, {Name: "private_key_file", Required: true},
}}

var (
	repoName  = regexp.MustCompile(`^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$`)
	labelName = regexp.MustCompile(`^[^\x00-\x1f\x7f]{1,50}$`)
)

func (l *loader) decodeForge(_ *hcl.File, b *hcl.Block) {
	if prev := l.spec.Forge; prev != nil {
		l.errorf(b.DefRange, "Duplicate forge", "providers.hcl may have one forge block; another is at %s.", prev.DeclRange)
		return
	}
	f := &Forge{Kind: b.Labels[0], DeclRange: b.DefRange}
	c := l.content(b.Body, forgeSchema)
	if c == nil {
		return
	}
	switch f.Kind {
	case ForgeGitea, ForgeGitHub:
	default:
		l.errorf(b.LabelRanges[0], "Unknown forge", "forge %q: the forges are \"gitea\" and \"github\".", f.Kind)
		return
	}
	ctx := l.evalCtx(false)
	if a, ok := c.Attributes["base_url"]; ok {
		f.BaseURLRange = a.Expr.Range()
		if l.decodeAttr(c.Attributes, "base_url", ctx, &f.BaseURL) {
			f.BaseURL = l.forgeURL(f.BaseURL, f.BaseURLRange)
		}
	} else if f.Kind == ForgeGitea {
		l.errorf(b.DefRange, "Missing base_url", "A gitea forge needs base_url, the Gitea server's root such as \"https://gitea.example.com/\".")
	} else {
		f.BaseURL, f.BaseURLRange = DefaultGitHubAPI, b.DefRange
	}
	var repo string
	if l.decodeAttr(c.Attributes, "repository", ctx, &repo) {
		if !repoName.MatchString(repo) {
			l.errorf(c.Attributes["repository"].Expr.Range(), "Invalid repository", "repository %q must be \"owner/name\".", repo)
		} else {
			f.Owner, f.Name, _ = strings.Cut(repo, "/")
		}
	}
	n := 0
	if l.decodeAttr(c.Attributes, "token_env", ctx, &f.TokenEnv) {
		n++
		if !envName.MatchString(f.TokenEnv) {
			l.errorf(c.Attributes["token_env"].Expr.Range(), "Invalid variable name", "token_env names the environment variable that holds the token, such as \"GITEA_TOKEN\"; never put the token itself in git.")
		}
	}
	if l.decodeAttr(c.Attributes, "token_file", ctx, &f.TokenFile) {
		n++
		if !filepath.IsAbs(f.TokenFile) {
			l.errorf(c.Attributes["token_file"].Expr.Range(), "Relative token file", "token_file %q must be an absolute path on the reconciler's machine (a mounted secret), not a file of the repository.", f.TokenFile)
		}
	}
	for _, ab := range c.Blocks {
		n++
		if f.Kind != ForgeGitHub {
			l.errorf(ab.DefRange, "Unsupported block", "An app block authenticates a GitHub App; a %s forge takes token_env or token_file.", f.Kind)
			continue
		}
		if f.App != nil {
			l.errorf(ab.DefRange, "Duplicate app", "A forge has at most one app block.")
			continue
		}
		ac := l.content(ab.Body, appSchema)
		if ac == nil {
			continue
		}
		app := &GitHubApp{}
		l.decodeAttr(ac.Attributes, "id", ctx, &app.ID)
		l.decodeAttr(ac.Attributes, "installation_id", ctx, &app.InstallationID)
		if l.decodeAttr(ac.Attributes, "private_key_file", ctx, &app.PrivateKeyFile) && !filepath.IsAbs(app.PrivateKeyFile) {
			l.errorf(ac.Attributes["private_key_file"].Expr.Range(), "Relative key file", "private_key_file %q must be an absolute path on the reconciler's machine (a mounted secret), not a file of the repository.", app.PrivateKeyFile)
		}
		if app.ID <= 0 || app.InstallationID <= 0 {
			l.errorf(ab.DefRange, "Invalid app", "id and installation_id are the GitHub App's and its installation's numeric ids.")
		}
		f.App = app
	}
	if n != 1 {
		l.errorf(b.DefRange, "Forge credentials", "A forge takes exactly one of token_env, token_file or (github) an app block; this one has %d.", n)
	}
	if l.decodeAttr(c.Attributes, "labels", ctx, &f.Labels) {
		for _, lb := range f.Labels {
			if !labelName.MatchString(lb) {
				l.errorf(c.Attributes["labels"].Expr.Range(), "Invalid label", "label %q must be 1 to 50 printable characters.", lb)
			}
		}
	}
	l.spec.Forge = f
}

// forgeURL checks a forge's base URL and returns it ending in a slash.
func (l *loader) forgeURL(s string, rng hcl.Range) string {
	u, err := url.Parse(s)
	switch {
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		l.errorf(rng, "Invalid base URL", "base_url %q must be an http(s) URL such as \"https://gitea.example.com/\".", s)
		return s
	case u.User != nil:
		l.errorf(rng, "Credentials in base URL", "base_url must not carry credentials; name where the token is in token_env or token_file instead.")
		return s
	case u.RawQuery != "" || u.Fragment != "":
		l.errorf(rng, "Invalid base URL", "base_url %q must not have a query or fragment.", s)
		return s
	}
	if u.Path == "" || u.Path[len(u.Path)-1] != '/' {
		u.Path += "/"
	}
	return u.String()
}
