-- lua-jwt-twin: keys by kid (PEM public keys or HMAC secrets), the
-- algorithms accepted; the token is found as Kong's jwt plugin finds it.
return {
  name = "lua-jwt-twin",
  fields = {
    { protocols = { type = "set", elements = { type = "string", one_of = { "http", "https" } },
                    default = { "http", "https" } } },
    { config = {
        type = "record",
        fields = {
          { uri_param_names = { type = "set", elements = { type = "string" }, default = { "jwt" } } },
          { cookie_names = { type = "set", elements = { type = "string" }, default = {} } },
          { header_names = { type = "set", elements = { type = "string" }, default = { "authorization" } } },
          { claims_to_verify = { type = "set", elements = { type = "string", one_of = { "exp", "nbf" } },
                                 default = {} } },
          -- false: Kong's way (the PEM parsed per request); true: the EVP_PKEY
          -- parsed once per worker (what Kong does not do), to show the cost
          -- of libcrypto's verification alone
          { cache_pkey = { type = "boolean", default = false } },
          { keys = { type = "array", default = {}, elements = { type = "record", fields = {
              { kid = { type = "string", required = true } },
              { algorithm = { type = "string", required = true } },
              { key = { type = "string", required = true } },
          } } } },
        },
    } },
  },
}
