package sandbox

// UseExecStage makes the runs of the calling test start their command
// through the exec stage, the path of a kernel that refuses to trace it,
// until the returned function is called.
func UseExecStage() (restore func()) {
	was := forceExecStage
	forceExecStage = true
	return func() { forceExecStage = was }
}
