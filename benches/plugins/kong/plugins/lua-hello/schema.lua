return {
  name = "lua-hello",
  fields = {
    { config = {
        type = "record",
        fields = {
          { message = { type = "string", required = true } },
          { deny_status = { type = "integer", between = { 400, 599 } } },
        },
    } },
  },
}
