-- rs-jwt through the Admin API and the proxy, on kong-rs-gateway and on
-- real Kong (spec/support/helpers.lua): every algorithm accepted with its
-- key, Kong jwt's token lookup and answers, claims, consumers, and a table
-- of hostile tokens that must each be a 401 with a JSON body (never a 500,
-- never a pass).
local h = require "spec.support.helpers"
local tokens = require "spec.rs-jwt.tokens"
local cjson = require "cjson"

local SECRET = "rs-jwt-spec-secret"

describe("rs-jwt (integration)", function()
  local admin, proxy, keys, consumer_id

  local function route(name, config)
    h.res_status(201, admin:post("/services/jwt-svc/routes", { name = name, paths = { "/" .. name } }))
    h.res_status(201, admin:post("/routes/" .. name .. "/plugins", { name = "rs-jwt", config = config }))
  end

  local function now() return os.time() end

  local function hs(claims, alg, kid, secret)
    return tokens.token({ alg = alg or "HS256", kid = kid or "hs", typ = "JWT" }, claims, secret or SECRET)
  end

  local function signed(alg, kid, key, claims)
    return tokens.token({ alg = alg, kid = kid }, claims or { sub = "alice" }, key)
  end

  local function get(path, token, headers)
    headers = headers or {}
    if token then headers["Authorization"] = "Bearer " .. token end
    return proxy:get(path, nil, headers)
  end

  lazy_setup(function()
    keys = tokens.keys()
    h.start({ plugins = { "rs-jwt" }, workers = 2 })
    admin, proxy = h.admin(), h.proxy()
    h.res_status(201, admin:post("/services", { name = "jwt-svc", url = h.upstream_url() }))
    local res = admin:post("/consumers", { username = "jwt-alice", custom_id = "A-1" })
    h.res_status(201, res)
    consumer_id = res.json.id
    h.res_status(201, admin:post("/consumers", { username = "jwt-nobody" }))
    route("hs", {
      algorithms = { "HS256", "HS384", "HS512" },
      keys = { { kid = "hs", secret = SECRET } },
      claims_to_headers = { sub = "X-Jwt-Sub", scope = "X-Jwt-Scope" },
    })
    route("asym", {
      algorithms = { "RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA", "HS256" },
      keys = {
        { kid = "rsa", public_key = keys.rsa_pub },
        { kid = "ec", public_key = keys.ec_pub },
        { kid = "ec384", public_key = keys.ec384_pub },
        { kid = "ed", public_key = keys.ed_pub },
      },
    })
    route("claims", {
      algorithms = { "HS256" },
      keys = { { kid = "hs", secret = SECRET } },
      claims_to_verify = { "exp", "nbf" },
      maximum_expiration = 600,
      allowed_iss = { "https://idp.test" },
      allowed_aud = { "api" },
    })
    route("lenient", {
      algorithms = { "HS256" }, keys = { { kid = "hs", secret = SECRET } }, leeway = 60,
    })
    route("consumer", {
      algorithms = { "HS256" }, keys = { { kid = "hs", secret = SECRET } }, consumer_claim = "sub",
    })
    route("anon", {
      algorithms = { "HS256" }, keys = { { kid = "hs", secret = SECRET } }, consumer_claim = "sub",
      anonymous = "jwt-nobody",
    })
    route("places", {
      algorithms = { "HS256" }, keys = { { kid = "hs", secret = SECRET } },
      uri_param_names = { "token" }, cookie_names = { "session" }, header_names = { "x-token" },
      realm = "kong-rs", run_on_preflight = false,
    })
    h.settle()
  end)

  lazy_teardown(function()
    h.stop()
    if keys then keys.cleanup() end
  end)

  it("accepts every algorithm with its key, and forwards chosen claims", function()
    for _, alg in ipairs({ "HS256", "HS384", "HS512" }) do
      local res = get("/hs", hs({ sub = "alice" }, alg))
      assert.equal(200, res.status, alg .. ": " .. res.body)
    end
    for _, case in ipairs({
      { "RS256", "rsa", keys.rsa }, { "RS384", "rsa", keys.rsa }, { "RS512", "rsa", keys.rsa },
      { "PS256", "rsa", keys.rsa }, { "ES256", "ec", keys.ec }, { "ES384", "ec384", keys.ec384 },
      { "EdDSA", "ed", keys.ed },
    }) do
      local res = get("/asym", signed(case[1], case[2], case[3]))
      assert.equal(200, res.status, case[1] .. ": " .. res.body)
    end
    local res = get("/hs", hs({ sub = "alice" }), { ["X-Jwt-Scope"] = "spoofed-by-client" })
    local echo = h.echo(res)
    assert.equal("alice", echo.headers["x-jwt-sub"])
    assert.is_nil(echo.headers["x-jwt-scope"], "the claim is absent: the client's header is removed")
    assert.equal("alice", echo.headers["x-credential-identifier"])
  end)

  it("answers Kong jwt's 401s: no token, multiple tokens, WWW-Authenticate with realm", function()
    local res = get("/hs")
    assert.equal(401, res.status)
    assert.equal([[{"message":"Unauthorized"}]], res.body)
    assert.equal("Bearer", res.headers["www-authenticate"])
    assert.matches("application/json", res.headers["content-type"], 1, true)
    res = proxy:get("/hs?jwt=" .. hs({ a = 1 }), nil, { Authorization = "Bearer " .. hs({ a = 2 }) })
    assert.equal(401, res.status)
    assert.same({ message = "Multiple tokens provided" }, res.json)
    assert.equal('Bearer error="invalid_token"', res.headers["www-authenticate"])
    res = proxy:get("/places")
    assert.equal(401, res.status)
    assert.equal('Bearer realm="kong-rs"', res.headers["www-authenticate"])
  end)

  it("finds tokens in the configured query parameters, cookies and headers; OPTIONS pass with run_on_preflight off", function()
    local t = hs({ sub = "q" })
    assert.equal(200, proxy:get("/places?token=" .. t).status)
    assert.equal(200, proxy:get("/places", nil, { Cookie = "a=b; session=" .. t }).status)
    assert.equal(200, proxy:get("/places", nil, { ["X-Token"] = "bearer " .. t }).status)
    assert.equal(401, proxy:get("/places", nil, { Authorization = "Bearer " .. t }).status)
    assert.equal(200, proxy:send({ method = "OPTIONS", path = "/places" }).status)
  end)

  it("checks claims as Kong's jwt does, with leeway", function()
    local ok = { iss = "https://idp.test", aud = "api", exp = now() + 300, nbf = now() - 10 }
    assert.equal(200, get("/claims", hs(ok)).status)
    local res = get("/lenient", hs({ exp = now() - 30, nbf = now() + 30 }))
    assert.equal(200, res.status, res.body)
  end)

  it("maps the sub claim to a Kong consumer, refuses an unknown one, falls back to anonymous", function()
    local res = get("/consumer", hs({ sub = "jwt-alice" }))
    local echo = h.echo(res)
    assert.equal(consumer_id, echo.headers["x-consumer-id"])
    assert.equal("jwt-alice", echo.headers["x-consumer-username"])
    assert.equal("A-1", echo.headers["x-consumer-custom-id"])
    res = get("/consumer", hs({ sub = consumer_id }))
    assert.equal(200, res.status)
    res = get("/consumer", hs({ sub = "jwt-carol" }))
    assert.equal(401, res.status)
    assert.same({ message = "Could not find consumer for 'sub=jwt-carol'" }, res.json)
    res = get("/anon")
    echo = h.echo(res)
    assert.equal("jwt-nobody", echo.headers["x-consumer-username"])
    assert.equal("true", echo.headers["x-anonymous-consumer"])
    res = get("/anon", hs({ sub = "jwt-alice" }))
    echo = h.echo(res)
    assert.equal("jwt-alice", echo.headers["x-consumer-username"])
    assert.is_nil(echo.headers["x-anonymous-consumer"])
  end)

  describe("hostile tokens", function()
    -- { name, path, token (string or function), expected body (table: exact JSON;
    --   string: the message; nil: any JSON object), allowed statuses (default {401}) }
    local function cases()
      local T, n = tokens, now()
      local function seg(s) return T.b64url(s) end
      local valid = hs({ sub = "alice" })
      local h64, c64, s64 = valid:match("^([^.]+)%.([^.]+)%.([^.]+)$")
      local rs_valid = signed("RS256", "rsa", keys.rsa)
      local deep_array = '{"a":' .. string.rep("[", 1500) .. string.rep("]", 1500) .. "}"
      local deep_object = string.rep('{"a":', 600) .. "1" .. string.rep("}", 600)
      local none_sig = ""
      return {
        { "alg none, no signature", "/asym", seg('{"alg":"none"}') .. "." .. seg('{"sub":"a"}') .. ".",
          "Bad token; invalid alg" },
        { "alg none with a signature", "/asym", seg('{"alg":"none","kid":"rsa"}') .. "." .. c64 .. "." .. s64,
          "Bad token; invalid alg" },
        { "alg None", "/asym", seg('{"alg":"None"}') .. "." .. c64 .. "." .. s64, "Bad token; invalid alg" },
        { "alg NONE", "/asym", seg('{"alg":"NONE"}') .. "." .. c64 .. "." .. s64, "Bad token; invalid alg" },
        { "alg nOnE", "/hs", seg('{"alg":"nOnE"}') .. "." .. c64 .. "." .. none_sig, "Bad token; invalid alg" },
        { "alg missing", "/hs", seg('{"typ":"JWT"}') .. "." .. c64 .. "." .. s64, "Bad token; invalid alg" },
        { "alg a number", "/hs", seg('{"alg":256}') .. "." .. c64 .. "." .. s64, "Bad token; invalid alg" },
        { "alg null", "/hs", seg('{"alg":null}') .. "." .. c64 .. "." .. s64, "Bad token; invalid alg" },
        { "alg an array", "/hs", seg('{"alg":["HS256"]}') .. "." .. c64 .. "." .. s64, "Bad token; invalid alg" },
        { "alg ES512 (not offered)", "/asym", seg('{"alg":"ES512","kid":"ec"}') .. "." .. c64 .. "." .. s64,
          "Bad token; invalid alg" },
        { "HS256 signed with the RSA public key as secret, kid of the RSA key", "/asym",
          function() return tokens.token({ alg = "HS256", kid = "rsa" }, { sub = "mallory" }, keys.rsa_pub) end,
          "Invalid algorithm" },
        { "HS256 signed with the RSA public key as secret, no kid", "/asym",
          function() return tokens.token({ alg = "HS256" }, { sub = "mallory" }, keys.rsa_pub) end,
          "No credentials found for given 'kid'" },
        { "HS384 with the public key as secret (alg not allowed)", "/asym",
          function() return tokens.token({ alg = "HS384", kid = "rsa" }, { sub = "m" }, keys.rsa_pub) end,
          "Invalid algorithm" },
        { "HS256 with the EC public key as secret", "/asym",
          function() return tokens.token({ alg = "HS256", kid = "ec" }, { sub = "m" }, keys.ec_pub) end,
          "Invalid algorithm" },
        { "RS256 on an HS-only route", "/hs", rs_valid, "Invalid algorithm" },
        { "RS256 naming the EC key", "/asym", function() return signed("RS256", "ec", keys.rsa) end,
          "Invalid algorithm" },
        { "ES256 naming the RSA key", "/asym", function() return signed("ES256", "rsa", keys.ec) end,
          "Invalid algorithm" },
        { "ES384 naming the P-256 key", "/asym", function() return signed("ES384", "ec", keys.ec384) end,
          "Invalid algorithm" },
        { "EdDSA naming the RSA key", "/asym", function() return signed("EdDSA", "rsa", keys.ed) end,
          "Invalid algorithm" },
        { "wrong kid", "/asym", function() return signed("RS256", "nope", keys.rsa) end,
          "No credentials found for given 'kid'" },
        { "kid a number", "/asym", seg('{"alg":"RS256","kid":1}') .. "." .. c64 .. "." .. s64,
          "Bad token; invalid kid" },
        { "kid path traversal", "/asym", function() return signed("RS256", "../../../../etc/passwd", keys.rsa) end,
          "No credentials found for given 'kid'" },
        { "kid 3000 bytes", "/asym", function() return signed("RS256", string.rep("k", 3000), keys.rsa) end,
          "No credentials found for given 'kid'" },
        { "RS256 signed by another RSA key", "/asym", function() return signed("RS256", "rsa", keys.rsa2) end,
          "Invalid signature" },
        { "PS256 signed by another RSA key", "/asym", function() return signed("PS256", "rsa", keys.rsa2) end,
          "Invalid signature" },
        { "HS256 with the wrong secret", "/hs", function() return hs({ sub = "a" }, "HS256", "hs", "guess") end,
          "Invalid signature" },
        { "claims swapped after signing", "/hs", h64 .. "." .. seg('{"sub":"admin"}') .. "." .. s64,
          "Invalid signature" },
        { "signature truncated", "/asym", rs_valid:sub(1, -9), nil },
        { "signature empty", "/hs", h64 .. "." .. c64 .. ".", "Bad token; invalid signature" },
        { "signature standard base64 (+/)", "/hs", h64 .. "." .. c64 .. ".ab+/cd", "Bad token; invalid signature" },
        { "signature padded", "/hs", h64 .. "." .. c64 .. "." .. s64 .. "=", "Bad token; invalid signature" },
        { "four segments", "/hs", valid .. ".AAAA", "Bad token; invalid signature" },
        { "two segments", "/hs", h64 .. "." .. c64, "Bad token; invalid JSON" },
        { "one segment", "/hs", h64, "Bad token; invalid JSON" },
        { "header not base64", "/hs", "!!!!." .. c64 .. "." .. s64, "Bad token; invalid JSON" },
        { "claims not base64", "/hs", h64 .. ".%%%%." .. s64, "Bad token; invalid JSON" },
        { "header not JSON", "/hs", seg("alg=HS256") .. "." .. c64 .. "." .. s64, "Bad token; invalid JSON" },
        { "header a JSON string", "/hs", seg('"HS256"') .. "." .. c64 .. "." .. s64, "Bad token; invalid JSON" },
        { "claims a JSON array", "/hs", function() return hs('[1,2,3]') end, "Bad token; invalid claims" },
        { "claims a JSON number", "/hs", function() return hs('42') end, "Bad token; invalid claims" },
        { "duplicate exp claim", "/hs", function() return hs('{"exp":1,"exp":99999999999,"sub":"a"}') end,
          "Bad token; invalid claims" },
        { "duplicate sub claim", "/hs", function() return hs('{"sub":"alice","sub":"admin"}') end,
          "Bad token; invalid claims" },
        { "duplicate alg in the header", "/hs", seg('{"alg":"none","alg":"HS256","kid":"hs"}') .. "." .. c64 .. "." .. s64,
          "Bad token; invalid JSON" },
        { "nested array bomb", "/hs", function() return hs(deep_array) end, "Bad token; invalid JSON" },
        { "nested object bomb", "/hs", function() return hs(deep_object) end, "Bad token; invalid JSON" },
        { "exp 1e999", "/hs", function() return hs('{"exp":1e999}') end, "Bad token; invalid JSON" },
        { "crit header", "/hs", function()
            return tokens.token({ alg = "HS256", kid = "hs", crit = { "b64" }, b64 = false }, { sub = "a" }, SECRET)
          end, "Bad token; unsupported crit" },
        { "embedded jwk of the attacker", "/asym", function()
            return tokens.token({ alg = "RS256", kid = "attacker",
              jwk = { kty = "RSA", kid = "attacker", n = keys.rsa2_n, e = "AQAB" } }, { sub = "m" }, keys.rsa2)
          end, "No credentials found for given 'kid'" },
        { "jku to the attacker", "/asym", function()
            return tokens.token({ alg = "RS256", kid = "rsa", jku = "http://127.0.0.1:1/jwks" }, { sub = "m" }, keys.rsa2)
          end, "Invalid signature" },
        { "expired", "/claims", function()
            return hs({ iss = "https://idp.test", aud = "api", exp = n - 10, nbf = n - 20 })
          end, { exp = "token expired" } },
        { "not valid yet", "/claims", function()
            return hs({ iss = "https://idp.test", aud = "api", exp = n + 100, nbf = n + 60 })
          end, { nbf = "token not valid yet" } },
        { "exp and nbf missing", "/claims", function() return hs({ iss = "https://idp.test", aud = "api" }) end,
          { exp = "must be a number", nbf = "must be a number" } },
        { "exp a string", "/claims", function()
            return hs({ iss = "https://idp.test", aud = "api", exp = tostring(n + 100), nbf = n })
          end, { exp = "must be a number" } },
        { "exp beyond maximum_expiration", "/claims", function()
            return hs({ iss = "https://idp.test", aud = "api", exp = n + 3600, nbf = n })
          end, { exp = "exceeds maximum allowed expiration" } },
        { "expired past the leeway", "/lenient", function() return hs({ exp = n - 120 }) end,
          { exp = "token expired" } },
        { "issuer not allowed", "/claims", function()
            return hs({ iss = "https://evil.test", aud = "api", exp = n + 100, nbf = n })
          end, { iss = "not an allowed issuer" } },
        { "audience not allowed", "/claims", function()
            return hs({ iss = "https://idp.test", aud = { "web", "admin" }, exp = n + 100, nbf = n })
          end, { aud = "not an allowed audience" } },
        { "Bearer and nothing", "/hs", "", "Unauthorized" },
        { "whitespace inside", "/hs", h64 .. ". " .. c64 .. "." .. s64, "Bad token; invalid JSON" },
        { "NUL bytes", "/hs", h64 .. "\0." .. c64 .. "." .. s64, nil, { 400, 401 } },
        { "UTF-8 garbage", "/hs", "\xe2\x98\x83.\xf0\x9f\x92\xa9.\xff\xfe", "Bad token; invalid JSON" },
        { "huge token (4 KB of claims)", "/hs", function() return hs({ sub = string.rep("x", 4000) }, "HS256", "hs", "guess") end,
          "Invalid signature" },
        { "huge token beyond nginx's header buffer", "/hs", string.rep("A", 20000), nil, { 400, 401, 413, 414, 431, 494 } },
        { "consumer claim missing", "/consumer", function() return hs({ name = "x" }) end,
          "No mandatory 'sub' in claims" },
        { "consumer claim an object", "/consumer", function() return hs({ sub = { id = "x" } }) end,
          "Invalid 'sub' in claims" },
      }
    end

    it("answers each with a 401 and a JSON body, never a 500, never a pass", function()
      local list = cases()
      assert.truthy(#list >= 40, "at least 40 hostile tokens, got " .. #list)
      local failures = {}
      for _, case in ipairs(list) do
        local name, path, token, expected, statuses = case[1], case[2], case[3], case[4], case[5] or { 401 }
        if type(token) == "function" then token = token() end
        local res = proxy:get(path, nil, { Authorization = "Bearer " .. token })
        local ok_status = false
        for _, s in ipairs(statuses) do ok_status = ok_status or res.status == s end
        local problem
        if not ok_status then
          problem = "status " .. tostring(res.status) .. ": " .. tostring(res.body):sub(1, 200)
        elseif res.status == 401 then
          local okj, body = pcall(cjson.decode, res.body)
          if not okj or type(body) ~= "table" then
            problem = "body not JSON: " .. tostring(res.body):sub(1, 200)
          elseif type(expected) == "string" and body.message ~= expected then
            problem = "message " .. tostring(body.message) .. ", expected " .. expected
          elseif type(expected) == "table" then
            for k, v in pairs(expected) do
              if body[k] ~= v then problem = "body " .. res.body end
            end
            for k in pairs(body) do
              if expected[k] == nil then problem = "body " .. res.body end
            end
          end
        end
        if problem then failures[#failures + 1] = name .. ": " .. problem end
      end
      assert.same({}, failures)
      io.stdout:write("\n    rs-jwt: ", #list, " hostile tokens refused\n")
    end)

    it("leaves the workers alive and logs no plugin failure", function()
      assert.equal(200, get("/hs", hs({ sub = "alice" })).status)
      assert.not_matches("plugin rs%-jwt failed", h.error_log())
    end)
  end)

  it("refuses an invalid config with 400", function()
    local res = admin:post("/plugins", { name = "rs-jwt", config = {} })
    h.res_status(400, res)
    assert.matches("'config.keys', 'config.jwks_url'", res.body, 1, true)
    res = admin:post("/plugins", { name = "rs-jwt", config = { keys = { { secret = keys.rsa_pub } } } })
    h.res_status(400, res)
    assert.matches("must not be a PEM document", res.body, 1, true)
  end)
end)
