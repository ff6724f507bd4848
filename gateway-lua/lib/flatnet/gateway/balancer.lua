-- balancer_by_lua: the gateway's only per-request Lua. It routes (host + path prefix),
-- skips unhealthy targets, picks one round robin and hands it to nginx; a failed try is
-- counted against its target (passive health) and the next untried healthy target is
-- used (proxy_next_upstream error timeout).
--
-- Why all of it here and not in access_by_lua: entering a second Lua phase per request
-- costs more than all of the routing (measured: an empty access_by_lua block alone took
-- 12% of plain nginx's requests/s; see docs/gateway.md, Benchmark). When there is no
-- route or no healthy target the balancer fails the request (ngx.ERROR, a 500), and the
-- error_page handler in access.lua works out which page to show; that path is rare.
local ngx_balancer = require("ngx.balancer")
local balance = require("flatnet.gateway.balance")
local ipv4 = require("flatnet.gateway.ipv4")
local names = require("flatnet.gateway.names")
local routes = require("flatnet.gateway.routes")
local state = require("flatnet.gateway.state")

local ngx = ngx
local ngx_var = ngx.var
local set_current_peer = ngx_balancer.set_current_peer
local get_last_failure = ngx_balancer.get_last_failure

local M = {}

-- Worker-local round-robin position per route (keyed by the route table itself, so a
-- recompiled table starts afresh and the old one can be collected).
local position = setmetatable({}, { __mode = "k" })

-- Per-worker caches, brought up to date by a CHECK_EVERY timer in every worker (and at
-- once when this worker marks a target down), so requests read no shared state for
-- them: the compiled route table, and the targets known to be up.
M.CHECK_EVERY = 0.05
local table_cache, health_gen
local up_cache = {}

--- Re-read the route table and the health generation (timer callback).
function M.refresh(premature)
    if premature then
        return
    end
    table_cache = state.routes()
    local g = state.health():generation()
    if g ~= health_gen then
        health_gen, up_cache = g, {}
    end
end

--- Start the per-worker refresh timer (init_worker).
function M.start()
    M.refresh()
    return ngx.timer.every(M.CHECK_EVERY, M.refresh)
end

local function is_up(h, target)
    if up_cache[target] then
        return true
    end
    local up = h:is_up(target)
    if up then
        up_cache[target] = true
    end
    return up
end

local function uri()
    return ngx_var.uri
end

--- The route for this request, or nil.
function M.route(compiled)
    compiled = compiled or state.routes()
    local host = ngx_var.host
    local route = routes.match(compiled, host, uri)
    if not route then
        -- $host is already lower case without port or trailing dot; normalise anything else.
        local norm = names.normalize_host(ngx_var.http_host or host)
        if norm and norm ~= host then
            route = routes.match(compiled, norm, uri)
        end
    end
    return route
end

--- Parsed targets live on the route object: computed once per route table.
local function set(route, i)
    local peers = route.peers
    if not peers then
        peers = {}
        for j, t in ipairs(route.targets) do
            local ip, port = ipv4.parse_target(t)
            peers[j] = { ip, port }
        end
        route.peers = peers
    end
    local p = peers[i]
    local ok, err = set_current_peer(p[1], p[2])
    if not ok then
        ngx.log(ngx.ERR, "flatnet gateway: set_current_peer ", route.targets[i], ": ", err)
        return ngx.exit(ngx.ERROR)
    end
end

--- First try at a route of several targets: round robin over the healthy ones, with
-- as many more tries as there are other healthy targets.
local function first_of_several(route, h)
    local targets = route.targets
    local n = #targets
    local start = balance.advance(position[route], n)
    position[route] = start
    local up = balance.up_order(targets, start, is_up, h)
    if #up == 0 then
        return ngx.exit(ngx.ERROR)
    end
    if #up > 1 then
        ngx_balancer.set_more_tries(#up - 1)
    end
    ngx.ctx.flatnet = { route = route, up = up, next = 2, current = up[1] }
    return set(route, up[1])
end

--- A retry: the previous try at a route of several targets failed.
local function retry(ctx, why, code, h)
    local route, up = ctx.route, ctx.up
    local failed = route.targets[ctx.current]
    why = why .. (code and (" " .. code) or "")
    if h:passive_failure(failed, why) then
        ngx.log(ngx.WARN, "flatnet gateway: target ", failed, " marked down after repeated failures")
        up_cache = {}
    end
    ngx.log(ngx.WARN, "flatnet gateway: target ", failed, " failed (", why, "), trying the next one")
    -- Next untried target that is still up; else the next untried one anyway.
    local pick = balance.retry_pick(up, ctx.next, route.targets, h.is_up, h)
    ctx.next = pick + 1
    ctx.current = up[pick]
    return set(route, up[pick])
end

function M.balance()
    local h = state.health()
    local route = M.route(table_cache)
    if not route then
        return ngx.exit(ngx.ERROR)
    end
    local targets = route.targets
    -- The common case, one target. nginx makes a single try then (the upstream holds one
    -- placeholder server and no more tries are asked for), so there is no retry state
    -- to look at: no tables, no ngx.ctx, no get_last_failure. Each of those costs a few
    -- percent of the requests/s here (docs/gateway.md, Benchmark).
    if #targets == 1 then
        if not is_up(h, targets[1]) then
            return ngx.exit(ngx.ERROR)
        end
        return set(route, 1)
    end
    local why, code = get_last_failure()
    local ctx = why and ngx.ctx.flatnet
    if not ctx then
        return first_of_several(route, h)
    end
    return retry(ctx, why, code, h)
end

return M
