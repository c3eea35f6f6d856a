return {
  name = "lua-bench-c-noop",
  fields = {
    { config = {
        type = "record",
        fields = {
          -- path of the library built from noop_phase.c (beside this file)
          { library = { type = "string", required = true } },
        },
    } },
  },
}
