-- The route keeper: the gateway host's route to the Flatnet follows the VM next to it.
--
-- A WSL2 VM comes back from every restart with a new address on the WSL switch, and the
-- Windows route to the Flatnet through it (route add 10.87.0.0 mask 255.255.0.0 <VM>)
-- points at nothing. Every route_interval seconds the gateway asks route_url (flatnetd's
-- /v1/route, reached through an address that always leads to the VM: on Windows,
-- WSL's localhost forwarding at 127.0.0.1) for the address to route through, and runs
-- route_command when it changed (and again every route_reapply seconds and after a gap
-- in answers, for a route Windows dropped with the WSL adapter; routekeeper.lua).
--
-- This file is the decision, pure: an answer in, what to do out. It never produces a
-- command for anything but the configured Flatnet CIDR, and a next hop must be a plain
-- unicast IPv4 outside that CIDR: a wrong, garbled or missing answer leaves the last
-- good route alone (routekeeper.lua logs and counts it).
local cjson = require("cjson.safe")
local ipv4 = require("flatnet.gateway.ipv4")

local M = {}

--- The Flatnet route's fields for a template: $cidr, $network, $mask, $via.
local function fields(cidr_text, via)
    local c = ipv4.parse_cidr(cidr_text)
    local size = 2 ^ (32 - c.bits)
    local net = math.floor(c.addr / size) * size
    local mask = 2 ^ 32 - size
    local function quad(n)
        local parts = {}
        for i = 3, 0, -1 do
            parts[#parts + 1] = tostring(math.floor(n / 256 ^ i) % 256)
        end
        return table.concat(parts, ".")
    end
    return { cidr = quad(net) .. "/" .. c.bits, network = quad(net), mask = quad(mask), via = via }
end

--- The command for a template. Every value substituted is a validated dotted quad or
-- CIDR, so nothing from the answer can reach the shell but digits and dots.
function M.command(template, cidr_text, via)
    local f = fields(cidr_text, via)
    return (template:gsub("%$(%a+)", function(name)
        return f[name] or ("$" .. name)
    end))
end

--- A next hop a route may use: a dotted quad, not in the Flatnet, not 0/8, loopback,
-- link-local multicast, multicast, class E or broadcast.
function M.usable_via(via, cidr)
    local n = ipv4.parse(via)
    if not n then
        return false, "not an IPv4 address"
    end
    if ipv4.in_cidr(cidr, via) then
        return false, "inside the Flatnet itself"
    end
    local first = math.floor(n / 2 ^ 24)
    if first == 0 or first == 127 or first >= 224 then
        return false, "not a unicast host address"
    end
    return true
end

--- What to do with one answer of route_url.
-- `body`: the answer's text, or nil with `fetch_err`; `s`: {flatnet_cidr=}; `last`: the
-- via of the route now in place (or nil). Returns action, detail:
--   "apply", via      run the command for this next hop
--   "keep", why       nothing to change (the same via, or no route needed here)
--   "refuse", why     a wrong, garbled or missing answer: the last route stays
function M.decide(body, fetch_err, s, last)
    if not body then
        return "refuse", "no answer from route_url: " .. tostring(fetch_err or "unknown error")
    end
    local j = cjson.decode(body)
    if type(j) ~= "table" then
        return "refuse", "the answer is not JSON"
    end
    local want = ipv4.parse_cidr(s.flatnet_cidr)
    local got = type(j.cidr) == "string" and ipv4.parse_cidr(j.cidr)
    if not got or got.bits ~= want.bits or got.addr ~= want.addr then
        return "refuse", string.format("the answer names the range %s, not flatnet_cidr %s",
            tostring(j.cidr), s.flatnet_cidr)
    end
    if j["local"] == true then
        return "keep", "flatnetd runs on this host: no route needed"
    end
    if type(j.via) ~= "string" then
        return "refuse", "the answer has no next hop (via)"
    end
    local ok, why = M.usable_via(j.via, want)
    if not ok then
        return "refuse", string.format("next hop %s is %s", j.via, why)
    end
    if j.via == last then
        return "keep", "unchanged"
    end
    return "apply", j.via
end

return M
