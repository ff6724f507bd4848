-- The gateway config file (key = value lines; list keys may repeat): parsing,
-- defaults and validation. Pure Lua; used by the renderer.
local ipv4 = require("flatnet.gateway.ipv4")
local names = require("flatnet.gateway.names")
local httpclient = require("flatnet.gateway.httpclient")

local M = {}

local LISTS = {
    listen = true, listen_tls = true, allow = true, catalog_url = true, dns_listen = true, replicas = true,
    host_targets = true,
}

M.DEFAULTS = {
    domain = nil,
    flatnet_cidr = "",
    replicas = {},
    host_targets = {},
    listen = nil, -- default {"80"} unless listen_tls given
    listen_tls = {},
    tls_certificate = "",
    tls_certificate_key = "",
    allow = {},
    catalog_url = {},
    static_routes = "",
    refresh_interval = 5,
    catalog_timeout = 3,
    health_interval = 5,
    health_timeout = 2,
    health_timeouts = 2,
    fail_threshold = 3,
    fail_window = 10,
    down_time = 10,
    route_url = "",
    route_command = "",
    route_interval = 5,
    route_reapply = 300,
    connect_timeout = 3,
    read_timeout = 3600,
    send_timeout = 3600,
    client_max_body_size = "0",
    status_host = "gateway",
    status_listen = "",
    metrics_listen = "",
    dns_listen = {},
    dns_upstream = "",
    worker_processes = "1",
    worker_connections = 1024,
    user = "",
    module_dir = "/usr/share/nginx/modules",
    lua_lib = nil, -- default: the lib directory next to the renderer
    lua_path_extra = "/usr/share/lua/5.1/?.lua",
    lua_cpath_extra = "",
    error_log = "logs/error.log",
    error_log_level = "notice",
    access_log = "logs/access.log",
    pid = "logs/nginx.pid",
    temp_dir = "temp",
    upstream_keepalive = 32,
    shared_dict = "flatnet_gateway",
    shared_dict_size = "10m",
}

local NUMBERS = {
    refresh_interval = { 1, 86400 }, catalog_timeout = { 1, 300 }, health_interval = { 0, 86400 },
    health_timeout = { 1, 60 }, health_timeouts = { 1, 100 }, fail_threshold = { 1, 1000 },
    fail_window = { 1, 86400 }, down_time = { 1, 86400 }, route_interval = { 1, 3600 },
    route_reapply = { 5, 86400 }, connect_timeout = { 1, 600 }, read_timeout = { 1, 604800 },
    send_timeout = { 1, 604800 }, worker_connections = { 16, 1000000 }, upstream_keepalive = { 0, 10000 },
}

--- Parse config text. Returns a table of raw values (lists for list keys) or nil, err.
function M.parse(text)
    local cfg = {}
    local n = 0
    for line in (text .. "\n"):gmatch("([^\n]*)\n") do
        n = n + 1
        line = line:gsub("^%s+", ""):gsub("%s+$", "")
        if line ~= "" and line:sub(1, 1) ~= "#" then
            local key, value = line:match("^([%w_]+)%s*=%s*(.-)$")
            if not key then
                return nil, string.format("line %d: expected key = value", n)
            end
            if M.DEFAULTS[key] == nil and key ~= "domain" and key ~= "listen" and key ~= "lua_lib" then
                return nil, string.format("line %d: unknown key %q", n, key)
            end
            if value:find("[;{}\"'\\]") or value:find("%c") then
                return nil, string.format("line %d: %s: characters ; { } \" ' \\ are not allowed", n, key)
            end
            if LISTS[key] then
                cfg[key] = cfg[key] or {}
                for item in value:gmatch("[^,%s]+") do
                    local dup = false
                    for _, have in ipairs(cfg[key]) do
                        dup = dup or have == item
                    end
                    if not dup then
                        table.insert(cfg[key], item)
                    end
                end
            else
                if cfg[key] ~= nil then
                    return nil, string.format("line %d: %s given twice", n, key)
                end
                cfg[key] = value
            end
        end
    end
    return cfg
end

local function valid_listen(v)
    local port = v:match("^(%d+)$") or select(2, v:match("^([%d.]+):(%d+)$"))
    local addr = v:match("^([%d.]+):%d+$")
    return tonumber(port) and ipv4.is_port(tonumber(port)) and (not addr or ipv4.is_ipv4(addr))
end

--- Apply defaults and validate. Returns the full config or nil, err.
function M.finish(raw)
    local cfg = {}
    for k, v in pairs(M.DEFAULTS) do
        cfg[k] = v
    end
    for k, v in pairs(raw) do
        cfg[k] = v
    end
    if not cfg.domain or not names.is_hostname(cfg.domain:lower()) then
        return nil, "domain: a DNS name is required (e.g. domain = flatnet.example)"
    end
    cfg.domain = cfg.domain:lower()
    for k, range in pairs(NUMBERS) do
        local v = tonumber(cfg[k])
        if not v or v < range[1] or v > range[2] then
            return nil, string.format("%s: expected a number %d..%d, got %s", k, range[1], range[2], tostring(cfg[k]))
        end
        cfg[k] = v
    end
    if not cfg.listen then
        cfg.listen = #cfg.listen_tls > 0 and {} or { "80" }
    end
    for _, key in ipairs({ "listen", "listen_tls" }) do
        for _, v in ipairs(cfg[key]) do
            if not valid_listen(v) then
                return nil, key .. ": expected port or ipv4:port, got " .. v
            end
        end
    end
    if cfg.status_listen ~= "" and not valid_listen(cfg.status_listen) then
        return nil, "status_listen: expected port or ipv4:port, got " .. cfg.status_listen
    end
    if cfg.metrics_listen ~= "" and not valid_listen(cfg.metrics_listen) then
        return nil, "metrics_listen: expected port or ipv4:port (e.g. 127.0.0.1:9589), got "
            .. cfg.metrics_listen
    end
    for _, v in ipairs(cfg.dns_listen) do
        if not valid_listen(v) then
            return nil, "dns_listen: expected port or ipv4:port, got " .. v
        end
    end
    if #cfg.dns_listen > 0 then
        local addr, port = cfg.dns_upstream:match("^([%d.]+):(%d+)$")
        if not (addr and ipv4.is_ipv4(addr) and ipv4.is_port(tonumber(port))) then
            return nil, "dns_upstream: expected the LAN zone's DNS listener as ipv4:port "
                .. "(the gateway address flatnetctl status shows, port 5300), got "
                .. (cfg.dns_upstream == "" and "nothing" or cfg.dns_upstream)
        end
        if tonumber(port) == 53 then
            -- Port 53 answers whoever it trusts with everything, and through
            -- this relay every LAN machine has the gateway's address.
            return nil, "dns_upstream " .. cfg.dns_upstream .. ": port 53 is Flatnet DNS itself, "
                .. "which would answer the LAN with Flatnet addresses and outside names; "
                .. "use the LAN zone's own listener, port 5300 ([dns.lan] port on that host)"
        end
    elseif cfg.dns_upstream ~= "" then
        return nil, "dns_upstream is set but dns_listen is not: give dns_listen = 53 to answer the LAN"
    end
    if #cfg.listen_tls > 0 and (cfg.tls_certificate == "" or cfg.tls_certificate_key == "") then
        return nil, "listen_tls needs tls_certificate and tls_certificate_key"
    end
    for _, a in ipairs(cfg.allow) do
        if a ~= "all" and not ipv4.parse_cidr(a) then
            return nil, "allow: expected an IPv4 address or CIDR block, got " .. a
        end
    end
    for _, u in ipairs(cfg.catalog_url) do
        local ok, err = httpclient.parse_url(u)
        if not ok then
            return nil, "catalog_url: " .. err
        end
    end
    if #cfg.catalog_url == 0 and cfg.static_routes == "" then
        return nil, "no routes: give at least one catalog_url or a static_routes file"
    end
    if (cfg.route_url == "") ~= (cfg.route_command == "") then
        return nil, "route_url and route_command go together: the gateway asks route_url for the VM's "
            .. "address and runs route_command with it (docs/wsl2.md)"
    end
    if cfg.route_url ~= "" then
        local ok, err = httpclient.parse_url(cfg.route_url)
        if not ok then
            return nil, "route_url: " .. err
        end
        if not cfg.route_command:find("$via", 1, true) then
            return nil, "route_command: the template must use $via (and $cidr, or $network and $mask), "
                .. "e.g. route_command = ip route replace $cidr via $via"
        end
        for name in cfg.route_command:gmatch("%$(%a+)") do
            if name ~= "cidr" and name ~= "network" and name ~= "mask" and name ~= "via" then
                return nil, "route_command: unknown placeholder $" .. name .. "; use $cidr, $network, $mask, $via"
            end
        end
    end
    if not cfg.client_max_body_size:match("^%d+[kKmMgG]?$") then
        return nil, "client_max_body_size: expected e.g. 0 (no limit), 500m, 2g"
    end
    local cidr = ipv4.parse_cidr(cfg.flatnet_cidr)
    if not cidr or not cfg.flatnet_cidr:find("/", 1, true) then
        return nil, "flatnet_cidr: the Flatnet's address range is required (e.g. flatnet_cidr = 10.87.0.0/16, "
            .. "the Flatnet: line of flatnetctl status); the gateway proxies only to addresses inside it"
    end
    for _, r in ipairs(cfg.replicas) do
        if not names.is_label(r:lower()) then
            return nil, "replicas: expected service names (DNS labels), got " .. r
        end
    end
    for _, t in ipairs(cfg.host_targets) do
        local ip = ipv4.parse_target(t)
        if not ip or not ipv4.in_cidr(cidr, ip) then
            return nil, "host_targets: expected ip:port inside flatnet_cidr (a Flatnet host's own address "
                .. "the gateway may proxy to on purpose), got " .. t
        end
    end
    cfg.status_host = names.qualify(cfg.status_host, cfg.domain)
    if not names.is_hostname(cfg.status_host) then
        return nil, "status_host: expected a DNS label or host name"
    end
    return cfg
end

--- The settings table the Lua side gets at runtime.
function M.runtime_settings(cfg)
    return {
        domain = cfg.domain,
        flatnet_cidr = cfg.flatnet_cidr,
        replicas = cfg.replicas,
        host_targets = cfg.host_targets,
        catalog_urls = cfg.catalog_url,
        static_routes = cfg.static_routes,
        refresh_interval = cfg.refresh_interval,
        catalog_timeout = cfg.catalog_timeout,
        health_interval = cfg.health_interval,
        health_timeout = cfg.health_timeout,
        health_timeouts = cfg.health_timeouts,
        route_url = cfg.route_url,
        route_command = cfg.route_command,
        route_interval = cfg.route_interval,
        route_reapply = cfg.route_reapply,
        fail_threshold = cfg.fail_threshold,
        fail_window = cfg.fail_window,
        down_time = cfg.down_time,
        shared_dict = cfg.shared_dict,
        status_host = cfg.status_host,
    }
end

--- Serialise a table of strings, numbers and lists as a Lua literal.
function M.lua_literal(v)
    local t = type(v)
    if t == "string" then
        return string.format("%q", v):gsub("\\\n", "\\n")
    elseif t == "number" or t == "boolean" then
        return tostring(v)
    end
    local out = {}
    if #v > 0 then
        for i, item in ipairs(v) do
            out[i] = M.lua_literal(item)
        end
        return "{ " .. table.concat(out, ", ") .. " }"
    end
    local keys = {}
    for k in pairs(v) do
        keys[#keys + 1] = k
    end
    table.sort(keys, function(a, b)
        return tostring(a) < tostring(b)
    end)
    for _, k in ipairs(keys) do
        out[#out + 1] = k .. " = " .. M.lua_literal(v[k])
    end
    return "{ " .. table.concat(out, ", ") .. " }"
end

return M
