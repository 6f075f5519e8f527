package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/agentgitops/reconciler/forge"
	"github.com/agentgitops/reconciler/gitstore"
	"github.com/agentgitops/reconciler/hclspec"
	"github.com/agentgitops/reconciler/reconcile"
)

// forgeFactory builds the forge a spec's forge block names, resolving its
// token from the reconciler's environment or a file on its machine (never
// from the repository). The reconciler calls it only for a base URL the
// operator allowed with --forge-allow. instance names this reconciler in
// commit status contexts; branch is the protected branch pull requests
// target.
func forgeFactory(lookupEnv func(string) (string, bool), instance, branch string) reconcile.ForgeFactory {
	return func(f *hclspec.Forge, repo *gitstore.Repo) (reconcile.Forge, error) {
		switch f.Kind {
		case hclspec.ForgeGitea:
			token, err := forgeToken(f, lookupEnv)
			if err != nil {
				return nil, err
			}
			return forge.NewGitea(repo, forge.GiteaConfig{BaseURL: f.BaseURL, Owner: f.Owner, Name: f.Name, Token: token, Instance: instance, Labels: f.Labels})
		case hclspec.ForgeGitHub:
			cfg := forge.GitHubConfig{BaseURL: f.BaseURL, Owner: f.Owner, Name: f.Name, Base: branch, Instance: instance, Labels: f.Labels}
			if f.App != nil {
				key, err := os.ReadFile(f.App.PrivateKeyFile)
				if err != nil {
					return nil, fmt.Errorf("the GitHub App's private_key_file: %w", err)
				}
				cfg.AppID, cfg.InstallationID, cfg.PrivateKeyPEM = f.App.ID, f.App.InstallationID, key
			} else {
				token, err := forgeToken(f, lookupEnv)
				if err != nil {
					return nil, err
				}
				cfg.Token = token
			}
			return forge.NewGitHub(repo, cfg)
		}
		return nil, fmt.Errorf("unknown forge kind %q", f.Kind)
	}
}

// forgeToken reads the token a forge block names. Errors name the
// variable or file, never a value.
func forgeToken(f *hclspec.Forge, lookupEnv func(string) (string, bool)) (string, error) {
	switch {
	case f.TokenEnv != "":
		v, ok := lookupEnv(f.TokenEnv)
		if !ok || strings.TrimSpace(v) == "" {
			return "", fmt.Errorf("token_env %s is not set in the reconciler's environment", f.TokenEnv)
		}
		return strings.TrimSpace(v), nil
	case f.TokenFile != "":
		b, err := os.ReadFile(f.TokenFile)
		if err != nil {
			return "", fmt.Errorf("token_file: %w", err)
		}
		if t := strings.TrimSpace(string(b)); t != "" {
			return t, nil
		}
		return "", fmt.Errorf("token_file %s is empty", f.TokenFile)
	}
	return "", errors.New("the forge block names no token")
}
