-- Path normalisation and escaping with the behaviour of Kong's
-- kong/tools/uri.lua (normalize, escape): routing, the upstream path and
-- kong.request.get_path() all work on the normalised path, so that
-- /demo/../mine is /mine and %2e%2e is "..".
local byte = string.byte
local char = string.char
local sub = string.sub
local find = string.find
local gsub = string.gsub
local upper = string.upper
local fmt = string.format
local concat = table.concat
local tonumber = tonumber

local DOT, SLASH = byte("."), byte("/")

-- RFC 3986 reserved characters: kept percent-encoded (hex in upper case);
-- every other triplet is decoded
local RESERVED = {}
for c in ("!*'();:@&=+$,/?%#[]"):gmatch(".") do
  RESERVED[byte(c)] = true
end

local function decode(hex)
  local n = tonumber(hex, 16)
  if RESERVED[n] then
    return "%" .. upper(hex)
  end
  return char(n)
end

local _M = {}

--- Kong's normalize(uri, merge_slashes): decode, drop dot segments, and
-- with merge_slashes collapse "//".
function _M.normalize(uri, merge_slashes)
  if uri == "" or uri == "/" then
    return uri
  end
  if find(uri, "%", 1, true) then
    uri = gsub(uri, "%%(%x%x)", decode)
  end
  if not find(uri, ".", 1, true) and (not merge_slashes or not find(uri, "//", 1, true)) then
    return uri
  end
  local out, n = {}, 0
  while #uri > 0 do
    local a, b, c, d = byte(uri, 1, 4)
    if uri == "/." then
      uri = "/"
    elseif uri == "/.." then
      uri = "/"
      if n > 0 then n = n - 1 end
    elseif uri == "." or uri == ".." then
      uri = ""
    elseif a == DOT and b == DOT and c == SLASH then
      uri = sub(uri, 4)
    elseif a == DOT and b == SLASH then
      uri = sub(uri, 3)
    elseif a == SLASH and b == DOT and c == SLASH then
      uri = sub(uri, 3)
    elseif a == SLASH and b == DOT and c == DOT and d == SLASH then
      uri = sub(uri, 4)
      if n > 0 then n = n - 1 end
    elseif merge_slashes and a == SLASH and b == SLASH then
      uri = sub(uri, 2)
    else
      local i = find(uri, "/", 2, true)
      n = n + 1
      if i then
        out[n] = sub(uri, 1, i - 1)
        uri = sub(uri, i)
      else
        out[n] = uri
        uri = ""
      end
    end
  end
  return concat(out, nil, 1, n)
end

local function percent(c)
  return fmt("%%%02X", byte(c))
end

--- Kong's escape(uri): percent-encode what may not appear in a request
-- line (anything but reserved, unreserved and "%").
function _M.escape(uri)
  return (gsub(uri, "[^%w!#$&'()*+,/:;=?@%[%]%-_.~%%]", percent))
end

return _M
