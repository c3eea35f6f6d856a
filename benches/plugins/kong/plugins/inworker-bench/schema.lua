return {
  name = "inworker-bench",
  fields = {
    { config = {
        type = "record",
        fields = {
          { iterations = { type = "integer", required = true, default = 1000000, between = { 1, 100000000 } } },
          { repeats = { type = "integer", required = true, default = 5, between = { 1, 100 } } },
        },
    } },
  },
}
