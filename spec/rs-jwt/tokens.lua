-- Token factory for the rs-jwt specs: throwaway keys made by `openssl` when
-- the spec runs (in a temporary directory, removed by `cleanup`), tokens
-- signed with the openssl command line. Nothing here is a fixture on disk.
local cjson = require "cjson"

local _M = {}

local function sh(cmd)
  local p = assert(io.popen(cmd .. " 2>/dev/null", "r"))
  local out = p:read("*a")
  p:close()
  return out
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function write(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

--- base64url without padding.
function _M.b64url(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local chars = 4
    if not b then chars = 2 elseif not c then chars = 3 end
    for j = 1, chars do
      local idx = math.floor(n / 2 ^ (6 * (4 - j))) % 64
      out[#out + 1] = B64:sub(idx + 1, idx + 1)
    end
  end
  return table.concat(out)
end

local function hex_to_bin(hex)
  return (hex:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end))
end

local function bin_to_hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

--- Makes the keys: { dir, rsa, rsa2, ec, ec384, ed (private key files),
-- rsa_pub, rsa2_pub, ec_pub, ec384_pub, ed_pub (PEM text), rsa_n (modulus,
-- base64url) }.
function _M.keys()
  local dir = sh("mktemp -d \"${TMPDIR:-/tmp}/rs-jwt-keys.XXXXXX\""):gsub("%s+$", "")
  local k = { dir = dir }
  local function gen(name, args)
    k[name] = dir .. "/" .. name .. ".pem"
    sh("openssl " .. args .. " -out " .. k[name])
    sh("openssl pkey -in " .. k[name] .. " -pubout -out " .. dir .. "/" .. name .. ".pub")
    k[name .. "_pub"] = read(dir .. "/" .. name .. ".pub")
    assert(k[name .. "_pub"]:find("PUBLIC KEY", 1, true), "openssl made no " .. name .. " key")
  end
  gen("rsa", "genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048")
  gen("rsa2", "genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048")
  gen("ec", "genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256")
  gen("ec384", "genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384")
  gen("ed", "genpkey -algorithm ED25519")
  local modulus = sh("openssl rsa -in " .. k.rsa .. " -noout -modulus"):match("Modulus=(%x+)")
  k.rsa_n = _M.b64url(hex_to_bin(modulus))
  local modulus2 = sh("openssl rsa -in " .. k.rsa2 .. " -noout -modulus"):match("Modulus=(%x+)")
  k.rsa2_n = _M.b64url(hex_to_bin(modulus2))
  function k.cleanup()
    os.execute("rm -rf '" .. dir .. "'")
  end
  return k
end

-- DER ECDSA-Sig-Value -> R || S, each `size` bytes (RFC 7518 §3.4).
local function der_to_raw(der, size)
  local pos = 3
  if der:byte(2) > 0x80 then pos = 3 + (der:byte(2) - 0x80) end
  local out = {}
  for _ = 1, 2 do
    assert(der:byte(pos) == 0x02, "not a DER INTEGER")
    local len = der:byte(pos + 1)
    local int = der:sub(pos + 2, pos + 1 + len):gsub("^%z+", "")
    out[#out + 1] = string.rep("\0", size - #int) .. int
    pos = pos + 2 + len
  end
  return table.concat(out)
end

local DIGEST = { ["256"] = "-sha256", ["384"] = "-sha384", ["512"] = "-sha512" }

--- The signature of `input` with `alg` and `key` (a private key file, or the
-- HMAC secret for HS*).
function _M.sign(alg, input, key, dir)
  dir = dir or "/tmp"
  local file = os.tmpname()
  write(file, input)
  local family, bits = alg:sub(1, 2), alg:sub(3)
  local sig
  if family == "HS" then
    sig = sh("openssl dgst " .. DIGEST[bits] .. " -mac HMAC -macopt hexkey:" .. bin_to_hex(key) ..
             " -binary " .. file)
  elseif family == "RS" then
    sig = sh("openssl dgst " .. DIGEST[bits] .. " -sign " .. key .. " -binary " .. file)
  elseif family == "PS" then
    sig = sh("openssl dgst " .. DIGEST[bits] .. " -sign " .. key .. " -sigopt rsa_padding_mode:pss" ..
             " -sigopt rsa_pss_saltlen:digest -binary " .. file)
  elseif family == "ES" then
    local der = sh("openssl dgst " .. DIGEST[bits] .. " -sign " .. key .. " -binary " .. file)
    sig = der_to_raw(der, bits == "256" and 32 or 48)
  elseif alg == "EdDSA" then
    sig = sh("openssl pkeyutl -sign -rawin -inkey " .. key .. " -in " .. file)
  else
    error("no signer for " .. alg)
  end
  os.remove(file)
  return sig
end

local function encode(part)
  if type(part) == "table" then
    return (cjson.encode(part):gsub("\\/", "/"))
  end
  return part
end

--- A token: `header` and `claims` as tables (JSON-encoded) or raw JSON
-- strings; signed with `alg` and `key` unless `opts.signature` gives the
-- signature bytes.
function _M.token(header, claims, key, opts)
  opts = opts or {}
  local input = _M.b64url(encode(header)) .. "." .. _M.b64url(encode(claims))
  local alg = opts.sign_alg or (type(header) == "table" and header.alg)
  local sig = opts.signature or _M.sign(alg, input, key)
  return input .. "." .. _M.b64url(sig)
end

--- A JWKS document with the RSA keys `{ kid = modulus_b64url, ... }`.
function _M.jwks(rsa_keys)
  local keys = {}
  for kid, n in pairs(rsa_keys) do
    keys[#keys + 1] = { kty = "RSA", kid = kid, use = "sig", alg = "RS256", n = n, e = "AQAB" }
  end
  return cjson.encode({ keys = keys })
end

return _M
