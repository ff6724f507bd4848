-- Route tables: built from validated catalogs plus static routes, and matched by
-- host and longest path prefix. Pure Lua.
local names = require("flatnet.gateway.names")

local M = {}

local function target_less(a, b)
    return a < b
end

--- Build the route list.
-- catalogs: list of validated catalogs (catalog.validate results), in source order.
-- static:   static.parse result or nil.
-- Returns routes (sorted by host, then prefix), warnings (list of strings).
function M.build(catalogs, static, domain)
    static = static or { routes = {}, ports = {} }
    local warnings = {}
    local by_name, order = {}, {}
    for _, cat in ipairs(catalogs) do
        for _, svc in ipairs(cat.services) do
            local port = static.ports[svc.name] or svc.tcp_port
            if not port then
                warnings[#warnings + 1] = string.format(
                    "service %s on node %s has no tcp port: not routed", svc.name, svc.node)
            else
                local r = by_name[svc.name]
                if not r then
                    r = {
                        host = names.qualify(svc.name, domain),
                        prefix = "/",
                        service = svc.name,
                        origin = "catalog",
                        targets = {},
                        nodes = {},
                        seen = {},
                    }
                    by_name[svc.name] = r
                    order[#order + 1] = r
                end
                local t = svc.ip .. ":" .. port
                if not r.seen[t] then
                    r.seen[t] = true
                    r.targets[#r.targets + 1] = t
                end
                r.nodes[t] = svc.node
            end
        end
    end

    local list, index = {}, {}
    for _, r in ipairs(order) do
        r.seen = nil
        table.sort(r.targets, target_less)
        index[r.host .. r.prefix] = #list + 1
        list[#list + 1] = r
    end
    for _, s in ipairs(static.routes) do
        local r = {
            host = s.host,
            prefix = s.prefix,
            origin = "static",
            targets = s.targets,
            nodes = {},
        }
        local i = index[s.host .. s.prefix]
        if i then
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
    return list, warnings
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
