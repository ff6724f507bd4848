-- Host names and DNS labels: validation and normalisation. Pure Lua.
local M = {}

--- A DNS label as a service name: 1..63 of [a-z0-9-], not starting or ending with '-'.
-- Input is compared case-insensitively; callers should lower() first.
function M.is_label(s)
    if type(s) ~= "string" or #s < 1 or #s > 63 then
        return false
    end
    return s:find("^[a-z0-9][a-z0-9-]*$") ~= nil and s:sub(-1) ~= "-"
end

--- A host name made of DNS labels separated by dots (no trailing dot), at most 253 chars.
function M.is_hostname(s)
    if type(s) ~= "string" or #s < 1 or #s > 253 then
        return false
    end
    for label in (s .. "."):gmatch("([^.]*)%.") do
        if not M.is_label(label) then
            return false
        end
    end
    return true
end

--- Lower-case a Host header value, drop a :port suffix and a trailing dot.
function M.normalize_host(host)
    if type(host) ~= "string" then
        return nil
    end
    host = host:lower()
    if host:sub(1, 1) ~= "[" then
        host = host:gsub(":%d*$", "")
    end
    host = host:gsub("%.$", "")
    return host
end

--- The host a route name is served at: a bare label gets ".<domain>", a dotted name is used as is.
function M.qualify(name, domain)
    name = name:lower()
    if name:find(".", 1, true) then
        return name
    end
    return name .. "." .. domain
end

return M
