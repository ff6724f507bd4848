-- The static routes file: fallback and override for catalog routes. Pure Lua.
--
--   # comment
--   route <host> <path-prefix> <ip:port> [<ip:port> ...]
--   port  <service> <port>
--
-- <host> is a bare label (served at <label>.<domain>) or a full host name.
-- A static route replaces the catalog route with the same host and prefix;
-- "port" picks the target port of a catalog service instead of its first tcp port.
local ipv4 = require("flatnet.gateway.ipv4")
local names = require("flatnet.gateway.names")
local show = require("flatnet.gateway.text").show

local M = {}

M.MAX_BYTES = 1024 * 1024

local function valid_prefix(p)
    return #p <= 1024 and p:sub(1, 1) == "/" and not p:find("[%c%s]")
end

--- Parse the text of a static routes file.
-- Returns {routes={{host=, prefix=, targets={"ip:port",...}}}, ports={name=port}} or nil, "line N: ...".
function M.parse(text, domain)
    if #text > M.MAX_BYTES then
        return nil, "static routes: file larger than " .. M.MAX_BYTES .. " bytes"
    end
    local result = { routes = {}, ports = {} }
    local seen = {}
    local n = 0
    for line in (text .. "\n"):gmatch("([^\n]*)\n") do
        n = n + 1
        line = line:gsub("#.*$", "")
        local words = {}
        for w in line:gmatch("%S+") do
            words[#words + 1] = w
        end
        local kind = words[1]
        local function fail(msg)
            return nil, string.format("static routes line %d: %s", n, msg)
        end
        if kind == "route" then
            if #words < 4 then
                return fail("expected: route <host> <path-prefix> <ip:port> [<ip:port> ...]")
            end
            local host = names.qualify(words[2], domain)
            if not names.is_hostname(host) then
                return fail("bad host " .. show(words[2]))
            end
            local prefix = words[3]
            if not valid_prefix(prefix) then
                return fail("path prefix must start with / and have no spaces, got " .. show(prefix))
            end
            local key = host .. prefix
            if seen[key] then
                return fail("duplicate route " .. host .. prefix)
            end
            seen[key] = true
            local targets, dup = {}, {}
            for i = 4, #words do
                if not ipv4.parse_target(words[i]) then
                    return fail("bad target " .. show(words[i]) .. ", expected ip:port")
                end
                if not dup[words[i]] then
                    dup[words[i]] = true
                    targets[#targets + 1] = words[i]
                end
            end
            result.routes[#result.routes + 1] = { host = host, prefix = prefix, targets = targets }
        elseif kind == "port" then
            local port = tonumber(words[3] or "")
            if #words ~= 3 or not names.is_label(words[2]:lower()) or not ipv4.is_port(port) then
                return fail("expected: port <service-label> <1..65535>")
            end
            result.ports[words[2]:lower()] = port
        elseif kind then
            return fail("unknown directive " .. show(kind) .. ' (expected "route" or "port")')
        end
    end
    return result
end

return M
