-- The Flatnet service catalog (GET /v1/catalog): strict decoding and validation. Pure Lua.
--
--   {"version": 1, "node": "host1",
--    "services": [{"name": "forgejo", "node": "host1", "ip": "10.87.1.5",
--                  "ports": [{"port": 3000, "protocol": "tcp"}], "owner": true}]}
--
-- `owner` (optional) says whether the service owns the bare name (owners.lua).
-- `gateways` (optional) lists the hosts' own addresses (each subnet's first): routes.lua
-- never proxies to them unless gateway.conf names them in `host_targets`.
--
-- Any error anywhere rejects the whole document: a half-understood catalog never
-- becomes routes. Unknown extra fields are ignored so flatnetd can add some later.
local cjson_safe = require("cjson.safe")
local ipv4 = require("flatnet.gateway.ipv4")
local names = require("flatnet.gateway.names")
local show = require("flatnet.gateway.text").show

local M = {}

M.VERSION = 1
M.MAX_BYTES = 4 * 1024 * 1024
M.MAX_SERVICES = 10000
M.MAX_PORTS = 64
M.MAX_GATEWAYS = 4096

local json = cjson_safe.new()
json.decode_max_depth(16)
json.decode_invalid_numbers(false)

local function is_array(t)
    if type(t) ~= "table" then
        return false
    end
    local n = 0
    for _ in pairs(t) do
        n = n + 1
    end
    return n == #t
end

local function is_object(t)
    return type(t) == "table" and (next(t) == nil or not is_array(t))
end

local function is_node(s)
    return type(s) == "string" and #s >= 1 and #s <= 253 and s:find("^[%w][%w._-]*$") ~= nil
end

local function validate_port(p, where)
    if not is_object(p) then
        return nil, where .. ": expected an object, got " .. show(p)
    end
    if not ipv4.is_port(p.port) then
        return nil, where .. ".port: expected an integer 1..65535, got " .. show(p.port)
    end
    if p.protocol ~= "tcp" and p.protocol ~= "udp" then
        return nil, where .. '.protocol: expected "tcp" or "udp", got ' .. show(p.protocol)
    end
    return { port = p.port, protocol = p.protocol }
end

local function validate_service(s, where)
    if not is_object(s) then
        return nil, where .. ": expected an object, got " .. show(s)
    end
    local name = type(s.name) == "string" and s.name:lower() or s.name
    if not names.is_label(name) then
        return nil, where .. ".name: expected a DNS label (1-63 of a-z 0-9 -), got " .. show(s.name)
    end
    if not is_node(s.node) then
        return nil, where .. ".node: expected a host name, got " .. show(s.node)
    end
    if not ipv4.is_ipv4(s.ip) then
        return nil, where .. ".ip: expected an IPv4 dotted quad, got " .. show(s.ip)
    end
    if not is_array(s.ports) then
        return nil, where .. ".ports: expected an array, got " .. show(s.ports)
    end
    if #s.ports > M.MAX_PORTS then
        return nil, string.format("%s.ports: %d entries, at most %d allowed", where, #s.ports, M.MAX_PORTS)
    end
    local ports, tcp = {}, nil
    for i, p in ipairs(s.ports) do
        local port, err = validate_port(p, string.format("%s.ports[%d]", where, i - 1))
        if not port then
            return nil, err
        end
        ports[i] = port
        if not tcp and port.protocol == "tcp" then
            tcp = port.port
        end
    end
    if s.owner ~= nil and type(s.owner) ~= "boolean" then
        return nil, where .. ".owner: expected true or false, got " .. show(s.owner)
    end
    return { name = name, node = s.node, ip = s.ip, ports = ports, tcp_port = tcp, owner = s.owner }
end

--- Validate a decoded catalog document.
-- Returns {node=, services={...}} or nil, "services[2].ip: expected ...".
function M.validate(doc)
    if not is_object(doc) then
        return nil, "catalog: expected a JSON object, got " .. show(doc)
    end
    if doc.version ~= M.VERSION then
        return nil, "version: expected 1, got " .. show(doc.version)
    end
    if not is_node(doc.node) then
        return nil, "node: expected a host name, got " .. show(doc.node)
    end
    if not is_array(doc.services) then
        return nil, "services: expected an array, got " .. show(doc.services)
    end
    if #doc.services > M.MAX_SERVICES then
        return nil, string.format("services: %d entries, at most %d allowed", #doc.services, M.MAX_SERVICES)
    end
    local services = {}
    for i, s in ipairs(doc.services) do
        local svc, err = validate_service(s, string.format("services[%d]", i - 1))
        if not svc then
            return nil, err
        end
        services[i] = svc
    end
    local gateways = {}
    if doc.gateways ~= nil then
        if not is_array(doc.gateways) or #doc.gateways > M.MAX_GATEWAYS then
            return nil, "gateways: expected an array of at most " .. M.MAX_GATEWAYS .. " IPv4 addresses, got "
                .. show(doc.gateways)
        end
        for i, g in ipairs(doc.gateways) do
            if not ipv4.is_ipv4(g) then
                return nil, string.format("gateways[%d]: expected an IPv4 dotted quad, got %s", i - 1, show(g))
            end
            gateways[i] = g
        end
    end
    return { node = doc.node, services = services, gateways = gateways }
end

--- Decode and validate catalog JSON text.
function M.decode(body)
    if type(body) ~= "string" then
        return nil, "catalog: no body"
    end
    if #body > M.MAX_BYTES then
        return nil, string.format("catalog: %d bytes, at most %d allowed", #body, M.MAX_BYTES)
    end
    local doc, err = json.decode(body)
    if doc == nil then
        return nil, "catalog: invalid JSON: " .. tostring(err)
    end
    return M.validate(doc)
end

return M
