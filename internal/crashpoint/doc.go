// Package crashpoint lets tests kill a real reconciler process at a named
// step, to check that whatever the process left behind is recovered by the
// next one.
//
// Hit(name) marks a step the code has just completed: "push" after every
// ref push in gitstore that the remote accepted, "ledger.append" after every
// ledger append that landed. In a binary built without the crashpoint build
// tag (every production build) Hit is an empty function the compiler
// inlines away: the binary carries nothing of this package.
//
// Built with -tags crashpoint (on unix), the environment variable
// RECONCILER_CRASH_AT=name:N makes the Nth call of Hit(name) in the process
// send SIGKILL to the process itself: a real kill, with no deferred
// function, no flushed buffer and no released file, as a power cut or the
// OOM killer would leave it. Other names, and an unset or malformed
// variable, change nothing.
package crashpoint

// EnvVar names the environment variable that arms a crash point.
const EnvVar = "RECONCILER_CRASH_AT"
