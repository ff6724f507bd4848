-- access_by_lua for proxied requests, plus the error-page handlers.
local names = require("flatnet.gateway.names")
local pages = require("flatnet.gateway.pages")
local respond = require("flatnet.gateway.respond")
local routes = require("flatnet.gateway.routes")
local balance = require("flatnet.gateway.balance")
local state = require("flatnet.gateway.state")

local M = {}

local next_start = balance.counter()

function M.handle()
    local host = names.normalize_host(ngx.var.host)
    local table_ = state.routes()
    local route = routes.match(table_, host, ngx.var.uri)
    if not route then
        return respond.send(404, pages.no_route(host, ngx.var.uri, table_.list, ngx.var.scheme))
    end
    local h = state.health()
    local up = h:up_targets(route.targets)
    if #up == 0 then
        local states = {}
        for i, t in ipairs(route.targets) do
            states[i] = h:state(t)
        end
        ngx.log(ngx.WARN, "flatnet gateway: all targets of ", host, route.prefix, " are down")
        return respond.send(503, pages.all_down(host, route, states))
    end
    ngx.ctx.flatnet = {
        up = up,
        start = next_start(route.host .. route.prefix, #up),
        tried = {},
    }
end

function M.forbidden()
    return respond.send(403, pages.forbidden(ngx.var.remote_addr))
end

--- error_page 502 504: nginx tried the targets and every try failed.
function M.upstream_failed()
    local status = ngx.status
    if status ~= 502 and status ~= 504 then
        status = 502
    end
    local tried = ngx.var.upstream_addr or ""
    -- The balancer counted every failed try but the last one; count that here.
    local last = tried:match("([%d.]+:%d+)%s*$")
    if last then
        state.health():passive_failure(last, "last try, status " .. status)
    end
    return respond.send(status, pages.upstream_failed(names.normalize_host(ngx.var.host), status, tried))
end

return M
