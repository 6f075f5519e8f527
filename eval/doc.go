// Package eval runs prompt regression evals: the scenarios of
// evals/<agent>/*.hcl in the desired-state repository, each a trigger with
// its payload and files laid over the repository, and the expectations the
// agent's run must meet (files that must or must not change, content that
// must or must not appear, the policy decision, a maximum cost and number
// of steps).
//
// Load parses the scenarios and returns every diagnostic at file:line:col.
// Runner.Run runs each scenario's agent with the same runners, workspace
// confinement, change checks and policy decision as a reconcile pass, in a
// fresh temporary workspace, and reports each failed expectation at the
// attribute or list element that states it.
//
// Model exchanges are recorded as the agent's own transcripts
// (agent.Transcript), one file per scenario at <recordings>/<agent>/<slug>.json,
// whose run id is the scenario's Key: a recording made for another version
// of the agent (its block, prompt or provider) or of the scenario's inputs
// is stale and never replayed. A replay feeds the recorded responses
// through the same tool loop (agent.Replay), so evals run offline in CI.
package eval
