provider "openai" "default" {
  base_url    = env("OPENAI_BASE_URL")
  api_key_env = "OPENAI_API_KEY"

  price "gpt-4o-mini" {
    input_per_mtok  = 0.15
    output_per_mtok = 0.60
  }
}

provider "exec" "local" {
  timeout = "30s"
}
