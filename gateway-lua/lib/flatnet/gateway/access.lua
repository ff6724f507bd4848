-- The error-page handlers: requests the balancer could not route (404, 503), a client
-- outside the allow list (403), and tries that all failed (502, 504).
local names = require("flatnet.gateway.names")
local pages = require("flatnet.gateway.pages")
local respond = require("flatnet.gateway.respond")
local balancer = require("flatnet.gateway.balancer")
local state = require("flatnet.gateway.state")

local M = {}

--- error_page 500: the balancer refused the request. Say why: no route, or no healthy
-- target. (A 500 for any other reason stays a 500.)
function M.no_target()
    local host = names.normalize_host(ngx.var.http_host or ngx.var.host) or ""
    local uri = ngx.var.uri
    local route = balancer.route()
    if not route then
        return respond.send(404, pages.no_route(host, uri, state.routes().list, ngx.var.scheme))
    end
    local h = state.health()
    if #h:up_targets(route.targets) == 0 then
        local states = {}
        for i, t in ipairs(route.targets) do
            states[i] = h:state(t)
        end
        ngx.log(ngx.WARN, "flatnet gateway: all targets of ", host, route.prefix, " are down")
        return respond.send(503, pages.all_down(host, route, states))
    end
    return respond.send(500, pages.internal_error(host))
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
