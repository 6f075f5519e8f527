// Package reconcile drives the control loop: it compares the desired state
// at the head of the protected branch with what the ledger and the proposal
// branches say happened, and does the next step for every agent: run it,
// decide on its change, propose it, and record approvals, merges and
// rejections.
//
// Git and the ledger are the only state. Every step is recorded before the
// next depends on it, and every step can be redone from what was recorded,
// so a crash at any point followed by a restart neither loses work nor does
// it twice: the same spec and trigger give the same run id, and a run that
// already has a proposal branch is adopted rather than run again.
package reconcile
