// Package ledger keeps the reconciler's audit trail: every event is an
// in-toto Statement v1, signed into a Sigstore bundle (DSSE), and committed
// as one file per commit to the orphan branch agent-evidence:
//
//	ledger/<seq/1000 as 9 digits>/<seq as 12 digits>.json
//
// Entries are hash-chained: each predicate carries its sequence number and
// the sha256 of the previous entry's bundle bytes, exactly as stored. Appends
// are a compare-and-swap of the branch ref, so two reconcilers never fork the
// chain: the loser re-reads and retries. Verify checks signatures, the chain,
// sequence continuity, the shape of the branch's history and the references
// to it from other branches, and names the first bad entry.
package ledger
