-- lua-rate-limiting-twin: the part of Kong's rate-limiting config the
-- benchmark uses (benches/ratelimit/run).
return {
  name = "lua-rate-limiting-twin",
  fields = {
    { protocols = { type = "set", elements = { type = "string", one_of = { "http", "https" } },
                    default = { "http", "https" } } },
    { config = {
        type = "record",
        fields = {
          { second = { type = "number" } },
          { minute = { type = "number" } },
          { hour = { type = "number" } },
          { day = { type = "number" } },
          { policy = { type = "string", default = "local", one_of = { "local", "redis" } } },
          { redis_host = { type = "string" } },
          { redis_port = { type = "integer", default = 6379 } },
          { redis_timeout = { type = "integer", default = 2000 } },
          { error_code = { type = "number", default = 429 } },
          { error_message = { type = "string", default = "API rate limit exceeded" } },
        },
    } },
  },
}
