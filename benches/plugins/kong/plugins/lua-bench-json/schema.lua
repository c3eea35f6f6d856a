return {
  name = "lua-bench-json",
  fields = { { config = { type = "record", fields = {} } } },
}
