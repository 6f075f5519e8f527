package ledger

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/agentgitops/reconciler/signing"
)

// ErrUntrusted is wrapped when an entry is not signed by a key the ledger
// trusts at its position, or when a writer's key is not trusted.
var ErrUntrusted = errors.New("ledger untrusted")

// KeyOf returns the ledger form of a public key.
func KeyOf(k signing.PublicKey) Key {
	return Key{ID: k.ID, PEM: string(k.PEM()), Source: k.Source}
}

// KeySet returns keys as ledger keys, one per ID, sorted by ID.
func KeySet(keys ...signing.PublicKey) []Key {
	out := make([]Key, 0, len(keys))
	seen := map[string]bool{}
	for _, k := range keys {
		if seen[k.ID] {
			continue
		}
		seen[k.ID] = true
		out = append(out, KeyOf(k))
	}
	slices.SortFunc(out, func(a, b Key) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// SameKeys reports whether a and b name the same key IDs.
func SameKeys(a, b []Key) bool {
	ids := func(ks []Key) []string {
		out := make([]string, len(ks))
		for i, k := range ks {
			out[i] = k.ID
		}
		slices.Sort(out)
		return slices.Compact(out)
	}
	return slices.Equal(ids(a), ids(b))
}

// HasKey reports whether keys holds the key with the given ID.
func HasKey(keys []Key, id string) bool {
	return slices.ContainsFunc(keys, func(k Key) bool { return k.ID == id })
}

// publicKeys parses ledger keys, checking that each ID is its key's.
func publicKeys(keys []Key) ([]signing.PublicKey, error) {
	out := make([]signing.PublicKey, 0, len(keys))
	for _, k := range keys {
		source := k.Source
		if source == "" {
			source = "ledger key " + k.ID
		}
		pk, err := signing.ParsePublicKeyPEM([]byte(k.PEM), source)
		if err != nil {
			return nil, err
		}
		if pk.ID != k.ID {
			return nil, fmt.Errorf("key %s: the id does not match the pem, whose id is %s", k.ID, pk.ID)
		}
		out = append(out, pk)
	}
	return out, nil
}

// newVerifier returns a verifier trusting exactly keys.
func newVerifier(keys []Key) (*signing.Verifier, error) {
	pks, err := publicKeys(keys)
	if err != nil {
		return nil, err
	}
	return signing.NewVerifier(pks...)
}

// trust is what an entry at a position is verified against: the keys in
// force (from the last genesis or keys.changed before it) and, for the
// genesis entry, the keys pinned out of band.
type trust struct {
	pinned   []signing.PublicKey
	keys     []Key
	verifier *signing.Verifier
}

// verify checks the bundle of the entry at seq against the keys in force
// and returns its decoded predicate. Entry 1 must be a genesis entry signed
// by one of the keys it names (and by a pinned key when keys are pinned);
// every later entry must be signed by a key of the last genesis or
// keys.changed entry before it. A keys.changed entry moves the trust to
// its keys for the entries after it.
func (t *trust) verify(seq uint64, bundle []byte) (Predicate, signing.PublicKey, error) {
	v := t.verifier
	if seq == 1 {
		payload, err := unverifiedPayload(bundle)
		if err != nil {
			return Predicate{}, signing.PublicKey{}, err
		}
		p, err := parseStatement(payload)
		if err != nil {
			return Predicate{}, signing.PublicKey{}, err
		}
		if p.Type != Genesis {
			return Predicate{}, signing.PublicKey{}, fmt.Errorf("%w: entry 1 is %s, not %s: the ledger has no trust root", ErrUntrusted, p.Type, Genesis)
		}
		if len(t.pinned) > 0 {
			v, err = signing.NewVerifier(t.pinned...)
		} else {
			v, err = newVerifier(p.Keys)
		}
		if err != nil {
			return Predicate{}, signing.PublicKey{}, fmt.Errorf("%w: genesis keys: %w", ErrUntrusted, err)
		}
	}
	if v == nil {
		return Predicate{}, signing.PublicKey{}, fmt.Errorf("%w: no trusted keys before entry %d", ErrUntrusted, seq)
	}
	verified, err := v.Verify(bundle)
	if err != nil {
		return Predicate{}, signing.PublicKey{}, fmt.Errorf("%w: not signed by a key trusted at entry %d: %w", ErrUntrusted, seq, err)
	}
	p, err := parseStatement(verified.Statement)
	if err != nil {
		return Predicate{}, signing.PublicKey{}, err
	}
	if p.Type == Genesis && seq != 1 {
		return Predicate{}, signing.PublicKey{}, fmt.Errorf("%w: %s at entry %d; only entry 1 may be one", ErrUntrusted, Genesis, seq)
	}
	if seq == 1 && !HasKey(p.Keys, verified.Key.ID) {
		return Predicate{}, signing.PublicKey{}, fmt.Errorf("%w: genesis is signed by %s, which is not among the keys it names", ErrUntrusted, verified.Key.ID)
	}
	return p, verified.Key, nil
}

// advance moves the trust past an entry that verified.
func (t *trust) advance(p Predicate) error {
	if p.Type != Genesis && p.Type != KeysChanged {
		return nil
	}
	v, err := newVerifier(p.Keys)
	if err != nil {
		return fmt.Errorf("%w: keys of entry %d: %w", ErrUntrusted, p.Seq, err)
	}
	t.keys, t.verifier = p.Keys, v
	return nil
}
