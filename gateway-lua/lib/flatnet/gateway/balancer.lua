-- balancer_by_lua: pick a target for each try. Round robin over the route's healthy
-- targets; a failed try is counted against its target (passive health) and the next
-- untried healthy target is used (proxy_next_upstream error timeout).
local ngx_balancer = require("ngx.balancer")
local balance = require("flatnet.gateway.balance")
local ipv4 = require("flatnet.gateway.ipv4")
local state = require("flatnet.gateway.state")

local M = {}

function M.balance()
    local ctx = ngx.ctx.flatnet
    if not ctx then
        ngx.log(ngx.ERR, "flatnet gateway: balancer without a route (access handler did not run)")
        return ngx.exit(500)
    end
    local h = state.health()
    if ctx.current then
        local why, code = ngx_balancer.get_last_failure()
        why = (why or "failed") .. (code and (" " .. code) or "")
        if h:passive_failure(ctx.current, why) then
            ngx.log(ngx.WARN, "flatnet gateway: target ", ctx.current, " marked down after repeated failures")
        end
        ngx.log(ngx.WARN, "flatnet gateway: target ", ctx.current, " failed (", why, "), trying the next one")
    elseif #ctx.up > 1 then
        ngx_balancer.set_more_tries(#ctx.up - 1)
    end
    local tried = ctx.tried
    local idx = balance.pick(ctx.up, ctx.start, function(t)
        return not tried[t] and h:is_up(t)
    end) or balance.pick(ctx.up, ctx.start, function(t)
        return not tried[t]
    end) or ctx.start
    local target = ctx.up[idx]
    tried[target] = true
    ctx.current = target
    ctx.start = idx % #ctx.up + 1
    local ip, port = ipv4.parse_target(target)
    local ok, err = ngx_balancer.set_current_peer(ip, port)
    if not ok then
        ngx.log(ngx.ERR, "flatnet gateway: set_current_peer ", target, ": ", err)
        return ngx.exit(500)
    end
end

return M
