-- rs-jwt's schema: Kong 3.9 jwt's fields (uri_param_names, cookie_names,
-- header_names, claims_to_verify, maximum_expiration, anonymous,
-- run_on_preflight, realm, secret_is_base64) plus keys, JWKS and claims
-- checks, generated from the Rust config type; the checks Kong makes in
-- entity_checks are the Rust constructor's.
local PLUGIN_NAME = "rs-jwt"
local validator = require("spec.support.validator")
local schema_def = require("kong.plugins." .. PLUGIN_NAME .. ".schema")
local tokens = require("spec.rs-jwt.tokens")

local function validate(config)
  return validator.validate(config, schema_def)
end

local function refused(config, message)
  local entity, err = validate(config)
  assert.is_nil(entity)
  assert.matches(message, validator.messages(err), nil, true)
end

describe(PLUGIN_NAME .. ": (schema)", function()
  local keys

  lazy_setup(function()
    keys = tokens.keys()
  end)

  lazy_teardown(function()
    if keys then keys.cleanup() end
  end)

  it("accepts a key and fills in Kong jwt's defaults and ours", function()
    local entity, err = validate({ keys = { { kid = "k", secret = "s3cr3t" } } })
    assert.is_nil(err)
    local config = entity.config
    assert.same({ "jwt" }, config.uri_param_names)
    assert.same({}, config.cookie_names)
    assert.same({ "authorization" }, config.header_names)
    assert.same({}, config.claims_to_verify)
    assert.equal(0, config.maximum_expiration)
    assert.is_true(config.run_on_preflight)
    assert.is_false(config.secret_is_base64)
    assert.same({ "RS256", "ES256" }, config.algorithms)
    assert.equal(300, config.jwks_ttl)
    assert.equal(30, config.refresh_interval)
    assert.equal(3600, config.max_stale)
    assert.equal("kong", config.cache_dict)
    assert.equal(0, config.leeway)
  end)

  it("accepts PEM public keys of every kind, a JWKS URL and every option", function()
    local entity, err = validate({
      keys = {
        { kid = "rsa", public_key = keys.rsa_pub },
        { kid = "ec", public_key = keys.ec_pub },
        { kid = "ec384", public_key = keys.ec384_pub },
        { kid = "ed", public_key = keys.ed_pub },
      },
      jwks_url = "https://idp.example/.well-known/jwks.json",
      algorithms = { "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                     "ES256", "ES384", "EdDSA" },
      claims_to_verify = { "exp", "nbf" }, maximum_expiration = 3600, leeway = 30,
      allowed_iss = { "https://idp.example" }, allowed_aud = { "api" }, required_claims = { "sub" },
      claims_to_headers = { sub = "X-Jwt-Sub", scope = "X-Jwt-Scope" },
      consumer_claim = "sub", anonymous = "nobody", realm = "api", run_on_preflight = false,
      cookie_names = { "session" }, header_names = { "authorization", "x-token" },
    })
    assert.is_nil(err)
    assert.equal("X-Jwt-Sub", entity.config.claims_to_headers.sub)
  end)

  it("requires keys or a JWKS URL", function()
    refused({}, "at least one of these fields must be non-empty: 'config.keys', 'config.jwks_url'")
  end)

  it("validates maximum_expiration as Kong's jwt does", function()
    refused({ keys = { { secret = "s" } }, maximum_expiration = -1, claims_to_verify = { "exp" } },
            "value should be between 0 and 31536000")
    refused({ keys = { { secret = "s" } }, maximum_expiration = 60, claims_to_verify = { "nbf" } },
            "expected to contain: exp")
  end)

  it("refuses claims_to_verify values and algorithms it does not know, and alg none", function()
    refused({ keys = { { secret = "s" } }, claims_to_verify = { "iat" } }, "expected one of")
    refused({ keys = { { secret = "s" } }, algorithms = { "none" } }, "expected one of")
    refused({ keys = { { secret = "s" } }, algorithms = { "ES512" } }, "expected one of")
  end)

  it("refuses a PEM document as an HMAC secret (algorithm confusion) and a private key as public key", function()
    refused({ keys = { { secret = keys.rsa_pub } } }, "must not be a PEM document")
    local f = assert(io.open(keys.rsa))
    local private = f:read("*a")
    f:close()
    refused({ keys = { { public_key = private } } }, "private key")
    refused({ keys = { { public_key = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n" } } },
            "not a PEM RSA, EC or Ed25519 public key")
    refused({ keys = { { kid = "both", secret = "s", public_key = keys.rsa_pub } } },
            "exactly one of secret and public_key")
  end)

  it("refuses a JWKS URL that is not http(s), and a bad claims_to_headers header name", function()
    refused({ jwks_url = "ftp://idp.example/jwks" }, "jwks_url")
    refused({ keys = { { secret = "s" } }, claims_to_headers = { sub = "Bad Header" } }, "bad header name")
  end)
end)
