package hclspec

// ValidAgentName reports whether s may name an agent (it becomes part of
// branch names): for callers that check a name before any spec is loaded,
// such as the controller's manual-run route.
func ValidAgentName(s string) bool { return agentNameOK(s) }
