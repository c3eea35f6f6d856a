return {
  name = "lua-bench-c-noop",
  fields = {
    { config = {
        type = "record",
        fields = {
          -- path of the library built from benches/instructions/marker.c
          { library = { type = "string", required = true } },
        },
    } },
  },
}
