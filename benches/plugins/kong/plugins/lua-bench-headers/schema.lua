return {
  name = "lua-bench-headers",
  fields = { { config = { type = "record", fields = {} } } },
}
