provider "exec" "local" {
  timeout = "1m"
}
