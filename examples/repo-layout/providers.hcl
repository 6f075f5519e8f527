# Where agents run.

# Deterministic agents: a command run in a temporary checkout of the spec
# commit with a scrubbed environment.
provider "exec" "local" {
  timeout          = "2m"
  max_output_bytes = 65536
}

# Any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, a gateway). The key is
# read from the variable named here; secrets never live in git.
provider "openai" "default" {
  base_url    = env("OPENAI_BASE_URL")
  api_key_env = "OPENAI_API_KEY"

  price "gpt-4o-mini" {
    input_per_mtok  = 0.15
    output_per_mtok = 0.60
  }
}

# The Prometheus the incident-responder's prometheus_query reads (read-only:
# PromQL queries, nothing else). The URL comes from the reconciler's
# environment; a bearer token would be named by bearer_token_env.
prometheus "main" {
  url = env("PROMETHEUS_URL")
}
