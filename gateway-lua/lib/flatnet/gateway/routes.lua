-- Route tables: built from validated catalogs plus static routes, and matched by
-- host and longest path prefix. Pure Lua.
local ipv4 = require("flatnet.gateway.ipv4")
local names = require("flatnet.gateway.names")
local owners = require("flatnet.gateway.owners")

local M = {}

local function new_route(host, service)
    return { host = host, prefix = "/", service = service, origin = "catalog", targets = {}, nodes = {} }
end

local function add_targets(r, node, targets)
    for _, t in ipairs(targets) do
        r.targets[#r.targets + 1] = t
        r.nodes[t] = node
    end
end

--- The keys of a table, sorted (also used by metrics.lua).
local function sorted_keys(t)
    local keys = {}
    for k in pairs(t) do
        keys[#keys + 1] = k
    end
    table.sort(keys)
    return keys
end
M.sorted_keys = sorted_keys

--- The Flatnet hosts' own addresses the catalogs name ({[ip] = true}).
local function host_addresses(catalogs)
    local set = {}
    for _, cat in ipairs(catalogs) do
        for _, g in ipairs(cat.gateways or {}) do
            set[g] = true
        end
    end
    return set
end

--- Group catalog services by name and node, keeping only routable targets.
-- Returns {[name] = {[node] = {owner=, targets={}}}}, present ({[name]={[node]=true}}).
local function collect(catalogs, static, cidr, hosts, warnings)
    local by_name, present = {}, {}
    for _, cat in ipairs(catalogs) do
        for _, svc in ipairs(cat.services) do
            local port = static.ports[svc.name] or svc.tcp_port
            if not port then
                warnings[#warnings + 1] = string.format(
                    "service %s on node %s has no tcp port: not routed", svc.name, svc.node)
            elseif cidr and not ipv4.in_cidr(cidr, svc.ip) then
                warnings[#warnings + 1] = string.format(
                    "service %s on node %s: %s is outside the Flatnet %s: not routed",
                    svc.name, svc.node, svc.ip, cidr.text)
            elseif hosts[svc.ip] then
                warnings[#warnings + 1] = string.format(
                    "service %s on node %s: %s is a Flatnet host's own address, not a container's: not routed",
                    svc.name, svc.node, svc.ip)
            else
                local nodes = by_name[svc.name] or {}
                by_name[svc.name] = nodes
                local n = nodes[svc.node] or { targets = {}, set = {} }
                nodes[svc.node] = n
                if svc.owner == true or (svc.owner == false and n.owner == nil) then
                    n.owner = svc.owner
                end
                local t = svc.ip .. ":" .. port
                if not n.set[t] then
                    n.set[t] = true
                    n.targets[#n.targets + 1] = t
                end
                present[svc.name] = present[svc.name] or {}
                present[svc.name][svc.node] = true
            end
        end
    end
    return by_name, present
end

--- Build the route list.
-- catalogs: list of validated catalogs (catalog.validate results), in source order.
-- static:   static.parse result or nil.
-- opts:     cidr (ipv4.parse_cidr result plus .text: targets outside are dropped),
--           host_targets ({["ip:port"] = true}: hosts' own addresses a static route may name),
--           seen (owners.observe state, updated in place), now (seconds),
--           replicas ({[name] = true}: balanced across nodes when no catalog says who owns it).
-- Returns routes (sorted by host, then prefix), warnings (list of strings).
function M.build(catalogs, static, domain, opts)
    opts = opts or {}
    static = static or { routes = {}, ports = {} }
    local warnings = {}
    local hosts = host_addresses(catalogs)
    local allowed = opts.host_targets or {}
    local by_name, present = collect(catalogs, static, opts.cidr, hosts, warnings)
    local seen = owners.observe(opts.seen or {}, present, opts.now or 0)
    local list, index = {}, {}
    local function add(r)
        table.sort(r.targets)
        index[r.host .. r.prefix] = #list + 1
        list[#list + 1] = r
    end
    for _, name in ipairs(sorted_keys(by_name)) do
        local nodes = by_name[name]
        local own = owners.owners(name, nodes, seen, opts.replicas or {})
        local bare = new_route(names.qualify(name, domain), name)
        for _, node in ipairs(sorted_keys(nodes)) do
            local targets = nodes[node].targets
            if own[node] then
                add_targets(bare, node, targets)
            else
                warnings[#warnings + 1] = string.format(
                    "service %s on node %s does not own the name %s: only at %s.%s.%s",
                    name, node, name, name, node:lower(), domain)
            end
            if names.is_label(node:lower()) then
                local r = new_route(name .. "." .. node:lower() .. "." .. domain, name)
                add_targets(r, node, targets)
                add(r)
            end
        end
        if #bare.targets > 0 then
            add(bare)
        end
    end
    for _, s in ipairs(static.routes) do
        local targets = {}
        for _, t in ipairs(s.targets) do
            local ip = t:match("^([%d.]+):")
            if opts.cidr and not ipv4.in_cidr(opts.cidr, ip) then
                warnings[#warnings + 1] = string.format(
                    "static route %s%s: %s is outside the Flatnet %s: dropped", s.host, s.prefix, t, opts.cidr.text)
            elseif hosts[ip] and not allowed[t] then
                warnings[#warnings + 1] = string.format(
                    "static route %s%s: %s is a Flatnet host's own address (its DNS, catalog and metrics "
                        .. "listen there): dropped; name it in gateway.conf host_targets to proxy to it on purpose",
                    s.host, s.prefix, t)
            else
                targets[#targets + 1] = t
            end
        end
        local r = { host = s.host, prefix = s.prefix, origin = "static", targets = targets, nodes = {} }
        local i = index[s.host .. s.prefix]
        if #targets == 0 then -- luacheck: ignore 542
            -- every target was dropped (warned above): so is the route
        elseif i then
            warnings[#warnings + 1] = "static route overrides catalog route " .. s.host .. s.prefix
            r.service = list[i].service
            list[i] = r
        else
            index[s.host .. s.prefix] = #list + 1
            list[#list + 1] = r
        end
    end
    table.sort(list, function(a, b)
        if a.host ~= b.host then
            return a.host < b.host
        end
        return a.prefix < b.prefix
    end)
    return list, warnings, seen
end

--- Index a route list by host; each host's routes ordered longest prefix first.
function M.compile(list)
    local hosts = {}
    for _, r in ipairs(list) do
        local h = hosts[r.host]
        if not h then
            h = {}
            hosts[r.host] = h
        end
        h[#h + 1] = r
    end
    for _, h in pairs(hosts) do
        table.sort(h, function(a, b)
            return #a.prefix > #b.prefix
        end)
        -- The common case, one route for the whole host: matching needs no path.
        if #h == 1 and h[1].prefix == "/" then
            h.whole = h[1]
        end
    end
    return { hosts = hosts, list = list }
end

--- Does path fall under prefix? Prefixes match whole path segments:
-- "/docs" matches "/docs", "/docs/" and "/docs/a" but not "/docsx"; "/docs/" and "/" match as plain prefixes.
function M.prefix_matches(prefix, path)
    if prefix == "/" then
        return true
    end
    if path:sub(1, #prefix) ~= prefix then
        return false
    end
    if #path == #prefix or prefix:sub(-1) == "/" then
        return true
    end
    return path:sub(#prefix + 1, #prefix + 1) == "/"
end

--- Find the route for a (normalised) host and a path. Returns the route or nil.
-- `path` may be a function returning the path, called only when it matters.
function M.match(compiled, host, path)
    local h = compiled.hosts[host]
    if not h then
        return nil
    end
    if h.whole then
        return h.whole
    end
    if type(path) == "function" then
        path = path()
    end
    for _, r in ipairs(h) do
        if M.prefix_matches(r.prefix, path) then
            return r
        end
    end
    return nil
end

return M
