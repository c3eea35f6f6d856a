-- lua-jwt-twin: the Lua twin of rs-jwt for benches/jwt, verifying the way
-- Kong 3.9's jwt plugin does (kong/plugins/jwt/{handler,jwt_parser}.lua):
-- tokens looked up in the query (kong.request.get_query), cookies
-- (ngx.var.cookie_*) and headers (kong.request.get_headers + ngx.re.gmatch
-- "\s*[Bb]earer\s+(.+)"), split, base64url-decoded (ngx.base64), header
-- and claims decoded with cjson, the key found by kid in a per-worker
-- table (Kong: kong.cache:get, an mlcache L1 hit), the PEM key parsed for
-- every request and the signature checked through LuaJIT FFI into
-- libcrypto as lua-resty-openssl does (EVP_DigestVerifyInit +
-- EVP_DigestVerify; ES*: the raw R||S made DER with ECDSA_SIG, as
-- ecdsa_use_raw does; HS*: HMAC() and a comparison), the registered claims
-- checked, then Kong's set_consumer (authenticate, X-Consumer-* and
-- X-Credential-Identifier headers, kong.ctx.shared.authenticated_jwt_token).
--
-- With cache_pkey = true the parsed key is kept per worker instead (Kong does
-- not do this): the cost of libcrypto's verification alone.
--
-- One simplification makes the twin cheaper than Kong, not dearer:
-- lua-resty-openssl's pkey.new(pem) tries PEM_read_bio_PrivateKey before
-- the public-key loaders; the twin calls PEM_read_bio_PUBKEY directly.
local ffi = require "ffi"
local cjson = require "cjson.safe"
local b64 = require "ngx.base64"

local C = ffi.C
local kong = kong
local ngx = ngx
local re_gmatch = ngx.re.gmatch
local decode_base64url = b64.decode_base64url
local find, sub, rep, fmt = string.find, string.sub, string.rep, string.format
local type, ipairs, pairs = type, ipairs, pairs

ffi.cdef [[
typedef struct bio_st BIO;
typedef struct evp_pkey_st EVP_PKEY;
typedef struct evp_md_ctx_st EVP_MD_CTX;
typedef struct evp_md_st EVP_MD;
typedef struct engine_st ENGINE;
typedef struct evp_pkey_ctx_st EVP_PKEY_CTX;
typedef struct ECDSA_SIG_st ECDSA_SIG;
typedef struct bignum_st BIGNUM;
BIO *BIO_new_mem_buf(const void *buf, int len);
int BIO_free(BIO *a);
EVP_PKEY *PEM_read_bio_PUBKEY(BIO *bp, EVP_PKEY **x, void *cb, void *u);
void EVP_PKEY_free(EVP_PKEY *pkey);
EVP_MD_CTX *EVP_MD_CTX_new(void);
void EVP_MD_CTX_free(EVP_MD_CTX *ctx);
const EVP_MD *EVP_get_digestbyname(const char *name);
int EVP_DigestVerifyInit(EVP_MD_CTX *ctx, EVP_PKEY_CTX **pctx, const EVP_MD *type, ENGINE *e, EVP_PKEY *pkey);
int EVP_DigestVerify(EVP_MD_CTX *ctx, const unsigned char *sig, size_t siglen, const unsigned char *tbs, size_t tbslen);
ECDSA_SIG *ECDSA_SIG_new(void);
void ECDSA_SIG_free(ECDSA_SIG *sig);
int ECDSA_SIG_set0(ECDSA_SIG *sig, BIGNUM *r, BIGNUM *s);
BIGNUM *BN_bin2bn(const unsigned char *s, int len, BIGNUM *ret);
int i2d_ECDSA_SIG(const ECDSA_SIG *sig, unsigned char **pp);
unsigned char *HMAC(const EVP_MD *evp_md, const void *key, int key_len, const unsigned char *d, size_t n, unsigned char *md, unsigned int *md_len);
void ERR_clear_error(void);
]]

local DIGESTS = {
  HS256 = "sha256", HS384 = "sha384", HS512 = "sha512",
  RS256 = "sha256", RS384 = "sha384", RS512 = "sha512",
  ES256 = "sha256", ES384 = "sha384",
}
local ES_LEN = { ES256 = 64, ES384 = 96 }

local uchar_ptr = ffi.typeof("unsigned char[?]")
local uchar_pp = ffi.typeof("unsigned char*[1]")
local uint_p = ffi.typeof("unsigned int[1]")

-- lua-resty-openssl's pkey.new(pem): a BIO over the text, the PEM parsed.
local function pkey_new(pem)
  local bio = C.BIO_new_mem_buf(pem, #pem)
  if bio == nil then return nil end
  local pkey = C.PEM_read_bio_PUBKEY(bio, nil, nil, nil)
  C.BIO_free(bio)
  if pkey == nil then
    C.ERR_clear_error()
    return nil
  end
  return ffi.gc(pkey, C.EVP_PKEY_free)
end

-- lua-resty-openssl's ecdsa_use_raw: R || S -> DER ECDSA-Sig-Value.
local function raw_to_der(sig)
  local half = #sig / 2
  local es = C.ECDSA_SIG_new()
  local r = C.BN_bin2bn(sig, half, nil)
  local s = C.BN_bin2bn(sub(sig, half + 1), half, nil)
  C.ECDSA_SIG_set0(es, r, s)
  local len = C.i2d_ECDSA_SIG(es, nil)
  local buf = uchar_ptr(len)
  local pp = uchar_pp(buf)
  C.i2d_ECDSA_SIG(es, pp)
  C.ECDSA_SIG_free(es)
  return ffi.string(buf, len)
end

-- pkey:verify(signature, data, md) of lua-resty-openssl.
local function pkey_verify(pkey, sig, data, md_name)
  local ctx = C.EVP_MD_CTX_new()
  local md = C.EVP_get_digestbyname(md_name)
  local ok = C.EVP_DigestVerifyInit(ctx, nil, md, nil, pkey) == 1
          and C.EVP_DigestVerify(ctx, sig, #sig, data, #data) == 1
  C.EVP_MD_CTX_free(ctx)
  if not ok then C.ERR_clear_error() end
  return ok
end

local function hmac(md_name, key, data)
  local out = uchar_ptr(64)
  local len = uint_p()
  C.HMAC(C.EVP_get_digestbyname(md_name), key, #key, data, #data, out, len)
  return ffi.string(out, len[0])
end

local function base64_decode(input)
  local remainder = #input % 4
  if remainder > 0 then
    input = input .. rep("=", 4 - remainder)
  end
  return decode_base64url(input)
end

-- parsed keys, with cache_pkey
local PKEYS = {}

local function verify(alg, data, signature, key, cache_pkey)
  local md = DIGESTS[alg]
  if sub(alg, 1, 2) == "HS" then
    return signature == hmac(md, key, data)
  end
  local pkey
  if cache_pkey then
    pkey = PKEYS[key]
    if not pkey then
      pkey = pkey_new(key)
      PKEYS[key] = pkey
    end
  else
    pkey = pkey_new(key)
  end
  if not pkey then return nil, "Consumer Public Key is Invalid" end
  if ES_LEN[alg] then
    if #signature ~= ES_LEN[alg] then return false end
    signature = raw_to_der(signature)
  end
  return pkey_verify(pkey, signature, data, md)
end

-- Kong's retrieve_tokens.
local function retrieve_tokens(conf)
  local token_set = {}
  local args = kong.request.get_query()
  for _, v in ipairs(conf.uri_param_names) do
    local token = args[v]
    if type(token) == "string" and token ~= "" then token_set[token] = true end
  end
  local var = ngx.var
  for _, v in ipairs(conf.cookie_names) do
    local cookie = var["cookie_" .. v]
    if cookie and cookie ~= "" then token_set[cookie] = true end
  end
  local request_headers = kong.request.get_headers()
  for _, v in ipairs(conf.header_names) do
    local token_header = request_headers[v]
    if token_header then
      if type(token_header) == "table" then token_header = token_header[1] end
      local iterator = re_gmatch(token_header, "\\s*[Bb]earer\\s+(.+)", "jo")
      local m = iterator and iterator()
      if m and #m > 0 and m[1] ~= "" then token_set[m[1]] = true end
    end
  end
  local tokens, n = {}, 0
  for token in pairs(token_set) do
    n = n + 1
    tokens[n] = token
  end
  if n == 0 then return nil end
  if n == 1 then return tokens[1] end
  return tokens
end

-- per-worker keys by kid (Kong: kong.cache, an L1 hit)
local KEYS = setmetatable({}, { __mode = "k" })

local function unauthorized(message)
  return kong.response.exit(401, { message = message },
                            { ["WWW-Authenticate"] = 'Bearer error="invalid_token"' })
end

local Twin = { VERSION = "0.1.0", PRIORITY = 1450 }

function Twin:access(conf)
  local token = retrieve_tokens(conf)
  if type(token) ~= "string" then
    return kong.response.exit(401, { message = "Unauthorized" }, { ["WWW-Authenticate"] = "Bearer" })
  end
  local first = find(token, ".", 1, true)
  local second = first and find(token, ".", first + 1, true)
  if not second then return unauthorized("Bad token; invalid JSON") end
  local header_64, claims_64, signature_64 = sub(token, 1, first - 1), sub(token, first + 1, second - 1),
                                             sub(token, second + 1)
  local header = cjson.decode(base64_decode(header_64) or "")
  local claims = cjson.decode(base64_decode(claims_64) or "")
  local signature = base64_decode(signature_64)
  if type(header) ~= "table" or type(claims) ~= "table" then return unauthorized("Bad token; invalid JSON") end
  if type(header.alg) ~= "string" or not DIGESTS[header.alg] then return unauthorized("Bad token; invalid alg") end
  if not signature then return unauthorized("Bad token; invalid signature") end

  local by_kid = KEYS[conf]
  if not by_kid then
    by_kid = {}
    for _, k in ipairs(conf.keys) do by_kid[k.kid] = k end
    KEYS[conf] = by_kid
  end
  local key = by_kid[header.kid]
  if not key then return unauthorized("No credentials found for given 'kid'") end
  if header.alg ~= key.algorithm then return unauthorized("Invalid algorithm") end
  if not verify(header.alg, header_64 .. "." .. claims_64, signature, key.key, conf.cache_pkey) then
    return unauthorized("Invalid signature")
  end
  local now = ngx.time()
  for _, claim in ipairs(conf.claims_to_verify) do
    local value = claims[claim]
    if type(value) ~= "number" then
      return kong.response.exit(401, { [claim] = "must be a number" })
    elseif claim == "exp" and value <= now then
      return kong.response.exit(401, { exp = "token expired" })
    elseif claim == "nbf" and value > now then
      return kong.response.exit(401, { nbf = "token not valid yet" })
    end
  end

  -- Kong's set_consumer (no consumer mapped, as rs-jwt without consumer_claim)
  local credential = { id = claims.sub, key = claims.sub, kid = header.kid }
  kong.client.authenticate(nil, credential)
  local set_header, clear_header = kong.service.request.set_header, kong.service.request.clear_header
  clear_header("X-Consumer-ID")
  clear_header("X-Consumer-Custom-ID")
  clear_header("X-Consumer-Username")
  if credential.key then set_header("X-Credential-Identifier", credential.key)
  else clear_header("X-Credential-Identifier") end
  clear_header("X-Anonymous-Consumer")
  kong.ctx.shared.authenticated_jwt_token = token
end

return Twin
