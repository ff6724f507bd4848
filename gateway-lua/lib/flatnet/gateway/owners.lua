-- Who owns a bare service name at the gateway. Pure Lua.
--
-- A service is always reachable as <name>.<node>.<domain>. The bare
-- <name>.<domain> goes to its owner only, so a container on another host
-- cannot take a share of a name's requests (and their cookies):
--   1. when a catalog says (flatnetd with Flatnet DNS sets `owner`), its
--      owners, as Flatnet DNS decided them (pins, first come, opted-in
--      replicas): the same rule for names and for the gateway;
--   2. otherwise the node this gateway saw offering the name first (ties by
--      node name), unless gateway.conf lists the name in `replicas`, which
--      balances it across every node that offers it.
local M = {}

--- A node that stops offering a name is forgotten after this many seconds;
-- until then it keeps its place, so a restart does not hand the name over.
M.FORGET_AFTER = 600

--- Record which nodes offer which names now.
-- seen: {[name] = {[node] = {first = t, last = t}}}, updated in place and returned.
-- present: {[name] = {[node] = true}}.
function M.observe(seen, present, now)
    for name, nodes in pairs(present) do
        local s = seen[name] or {}
        seen[name] = s
        for node in pairs(nodes) do
            local e = s[node]
            if e then
                e.last = now
            else
                s[node] = { first = now, last = now }
            end
        end
    end
    for name, s in pairs(seen) do
        for node, e in pairs(s) do
            if now - e.last > M.FORGET_AFTER then
                s[node] = nil
            end
        end
        if next(s) == nil then
            seen[name] = nil
        end
    end
    return seen
end

--- The owner nodes of one name.
-- nodes: {[node] = {owner = true|false|nil}} (what the catalogs said).
-- Returns {[node] = true}; empty when a catalog named owners and none of them is routable.
function M.owners(name, nodes, seen, replicas)
    local said, owners = false, {}
    for node, info in pairs(nodes) do
        if info.owner ~= nil then
            said = true
        end
        if info.owner == true then
            owners[node] = true
        end
    end
    if said then
        return owners
    end
    if replicas[name] then
        for node in pairs(nodes) do
            owners[node] = true
        end
        return owners
    end
    local best, best_t
    local s = seen[name] or {}
    for node in pairs(nodes) do
        local t = s[node] and s[node].first or math.huge
        if not best or t < best_t or (t == best_t and node < best) then
            best, best_t = node, t
        end
    end
    if best then
        owners[best] = true
    end
    return owners
end

return M
