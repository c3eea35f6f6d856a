return {
  name = "lua-bench-empty",
  fields = { { config = { type = "record", fields = {} } } },
}
