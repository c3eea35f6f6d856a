-- rs-rate-limiting's schema: Kong 3.9 rate-limiting's fields and checks,
-- generated from the Rust config type (the checks Kong's schema makes in
-- entity_checks/custom_validator are the Rust constructor's).
local PLUGIN_NAME = "rs-rate-limiting"
local validator = require("spec.support.validator")
local schema_def = require("kong.plugins." .. PLUGIN_NAME .. ".schema")

local function validate(config)
  return validator.validate(config, schema_def)
end

local function refused(config, message)
  local entity, err = validate(config)
  assert.is_nil(entity)
  assert.matches(message, validator.messages(err), nil, true)
end


describe(PLUGIN_NAME .. ": (schema)", function()
  it("accepts a limit and fills in Kong's defaults", function()
    local entity, err = validate({ minute = 10 })
    assert.is_nil(err)
    local config = entity.config
    assert.equal(10, config.minute)
    assert.equal("consumer", config.limit_by)
    assert.equal("local", config.policy)
    assert.is_true(config.fault_tolerant)
    assert.is_false(config.hide_client_headers)
    assert.equal(429, config.error_code)
    assert.equal("API rate limit exceeded", config.error_message)
    assert.equal(-1, config.sync_rate)
    assert.equal(6379, config.redis.port)
    assert.equal(2000, config.redis.timeout)
    assert.equal(0, config.redis.database)
  end)

  it("accepts every period, limit_by and the redis record of Kong 3.9", function()
    local entity, err = validate({
      second = 1, minute = 2, hour = 3, day = 4, month = 5, year = 6,
      limit_by = "header", header_name = "X-Tenant",
      policy = "redis",
      redis = { host = "127.0.0.1", port = 6380, username = "u", password = "p", database = 2,
                timeout = 100, ssl = true, ssl_verify = true, server_name = "redis.test" },
      fault_tolerant = false, hide_client_headers = true, error_code = 403, error_message = "slow down",
      sync_rate = 0.5,
    })
    assert.is_nil(err)
    assert.equal("redis.test", entity.config.redis.server_name)
  end)

  it("requires at least one limit", function()
    refused({ limit_by = "ip" }, "at least one of these fields must be non-empty")
  end)

  it("refuses limits that are not greater than 0", function()
    refused({ minute = 0 }, "greater than 0")
    refused({ minute = -5 }, "greater than 0")
  end)

  it("refuses a longer window with a lower limit, in Kong's words", function()
    refused({ second = 10, minute = 5 },
            "The limit for minute(5.0) cannot be lower than the limit for second(10.0)")
  end)

  it("refuses sync_rate except with the redis policy, and a too small one", function()
    refused({ minute = 1, sync_rate = 1 }, "sync_rate can only be used with the redis policy")
    refused({ minute = 1, policy = "redis", redis = { host = "r" }, sync_rate = 0.01 },
            "sync_rate must be greater than 0.02, or -1 to disable")
  end)

  it("requires redis.host with the redis policy", function()
    refused({ minute = 1, policy = "redis" }, "required field missing")
  end)

  it("requires header_name with limit_by header and path with limit_by path", function()
    refused({ minute = 1, limit_by = "header" }, "required field missing")
    refused({ minute = 1, limit_by = "path" }, "required field missing")
  end)

  it("refuses an unknown policy or limit_by", function()
    refused({ minute = 1, policy = "nope" }, "expected one of")
    refused({ minute = 1, limit_by = "nope" }, "expected one of")
  end)
end)
