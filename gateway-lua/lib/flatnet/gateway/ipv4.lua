-- IPv4 dotted quads, CIDR blocks and "ip:port" targets. Pure Lua.
local M = {}

--- Parse a strict dotted quad ("10.87.1.5"); no leading zeros, no spaces.
-- Returns the address as a number, or nil.
function M.parse(s)
    if type(s) ~= "string" or #s > 15 then
        return nil
    end
    local a, b, c, d = s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
    if not a then
        return nil
    end
    local n = 0
    for _, part in ipairs({ a, b, c, d }) do
        if #part > 1 and part:sub(1, 1) == "0" then
            return nil
        end
        local v = tonumber(part)
        if v > 255 then
            return nil
        end
        n = n * 256 + v
    end
    return n
end

function M.is_ipv4(s)
    return M.parse(s) ~= nil
end

--- Parse "a.b.c.d/len" or "a.b.c.d" (as /32). Returns {addr=, bits=} or nil.
function M.parse_cidr(s)
    if type(s) ~= "string" then
        return nil
    end
    local ip, bits = s:match("^([%d.]+)/(%d%d?)$")
    if not ip then
        ip, bits = s, "32"
    end
    local addr = M.parse(ip)
    bits = tonumber(bits)
    if not addr or bits > 32 then
        return nil
    end
    return { addr = addr, bits = bits }
end

--- Does address (a dotted quad) fall inside cidr (a parse_cidr result)?
function M.in_cidr(cidr, ip)
    local addr = M.parse(ip)
    if not addr then
        return false
    end
    local size = 2 ^ (32 - cidr.bits)
    return math.floor(addr / size) == math.floor(cidr.addr / size)
end

--- A TCP port: an integer 1..65535 (a number, or a string of digits when from_text).
function M.is_port(p)
    return type(p) == "number" and p >= 1 and p <= 65535 and p == math.floor(p)
end

--- Parse "ip:port". Returns ip, port or nil.
function M.parse_target(s)
    if type(s) ~= "string" then
        return nil
    end
    local ip, port = s:match("^([%d.]+):(%d+)$")
    if not ip or not M.is_ipv4(ip) or #port > 5 then
        return nil
    end
    port = tonumber(port)
    if not M.is_port(port) then
        return nil
    end
    return ip, port
end

return M
