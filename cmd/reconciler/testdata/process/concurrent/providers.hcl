provider "exec" "local" {
  timeout = "1m"
}

# The scripted model server the test starts; its URL changes every run, so it
# is read from the environment.
provider "openai" "scripted" {
  base_url    = env("RECONCILER_TEST_MODEL_URL")
  api_key_env = "RECONCILER_TEST_MODEL_KEY"

  price "scripted-model" {
    input_per_mtok  = 2.5
    output_per_mtok = 10
  }
}
