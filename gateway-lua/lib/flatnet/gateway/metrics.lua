-- Prometheus metrics of the gateway (`metrics_listen` in gateway.conf; off unless set):
--   flatnet_gateway_requests_total{service,status}      requests by route and status class
--   flatnet_gateway_upstream_latency_seconds{service}   histogram of upstream response time
--   flatnet_gateway_target_up{service,target}            1 while a target is healthy
--   flatnet_gateway_routes                               routes in the table now
-- Sans-IO: counts live in a store with the ngx.shared.DICT interface (incr, get,
-- get_keys), so every worker adds to the same numbers and busted tests use a fake.
-- The log phase that counts runs only when metrics are on (docs/gateway.md: a Lua
-- phase per request has a price).
local sorted = require("flatnet.gateway.routes").sorted_keys

local M = {}

--- Upper bounds of the latency buckets, seconds (Prometheus' defaults).
M.BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }

--- A request that matched no route is counted under this service name.
M.UNROUTED = "_unrouted"

local SEP = "\t"

--- "2xx" for 200..299 and so on; "other" for anything outside 100..599.
function M.status_class(status)
    status = tonumber(status)
    if not status or status < 100 or status > 599 then
        return "other"
    end
    return math.floor(status / 100) .. "xx"
end

--- Total upstream time from $upstream_response_time: "0.010, 0.002 : 0.004" (retries,
-- internal redirects) adds up; "-" (no response) counts nothing. Returns nil when no
-- upstream answered.
function M.upstream_seconds(s)
    if type(s) ~= "string" then
        return nil
    end
    local total, any = 0, false
    for n in s:gmatch("[%d.]+") do
        local v = tonumber(n)
        if v then
            total, any = total + v, true
        end
    end
    return any and total or nil
end

--- The `service` label of a route: its catalog service, else its host (static routes).
function M.service_of(route)
    return route.service or route.host or M.UNROUTED
end

--- Count one finished request.
function M.observe(store, service, status, upstream_time)
    service = service or M.UNROUTED
    store:incr("r" .. SEP .. service .. SEP .. M.status_class(status), 1, 0)
    local t = M.upstream_seconds(upstream_time)
    if not t then
        return
    end
    local b = #M.BUCKETS + 1
    for i, le in ipairs(M.BUCKETS) do
        if t <= le then
            b = i
            break
        end
    end
    store:incr("b" .. SEP .. service .. SEP .. b, 1, 0)
    store:incr("s" .. SEP .. service, t, 0)
    store:incr("c" .. SEP .. service, 1, 0)
end

--- A label value in the text format: backslash, quote and newline escaped.
function M.escape(v)
    return (tostring(v):gsub("\\", "\\\\"):gsub('"', '\\"'):gsub("\n", "\\n"))
end

local function num(v)
    if v == math.floor(v) and math.abs(v) < 1e15 then
        return string.format("%d", v)
    end
    return string.format("%.6f", v)
end

--- The exposition (Prometheus text format 0.0.4). `keys`: every key of the store;
-- `routes`: the route list ({service=, targets={}}); `is_up(target)`: health;
-- `keeper`: the route keeper's status (routekeeper.status()), or nil when it is off.
function M.render(store, keys, routes, is_up, keeper)
    local req, hist = {}, {}
    for _, k in ipairs(keys) do
        local kind, a, b = k:match("^(%a)\t([^\t]*)\t?(.*)$")
        local v = store:get(k)
        if kind == "r" and v then
            req[#req + 1] = { a, b, v }
        elseif kind and v and (kind == "b" or kind == "s" or kind == "c") then
            local h = hist[a] or { buckets = {}, sum = 0, count = 0 }
            hist[a] = h
            if kind == "b" then
                h.buckets[tonumber(b)] = v
            elseif kind == "s" then
                h.sum = v
            else
                h.count = v
            end
        end
    end
    table.sort(req, function(x, y)
        return x[1] < y[1] or (x[1] == y[1] and x[2] < y[2])
    end)
    local out = {}
    local function add(s)
        out[#out + 1] = s
    end
    add("# HELP flatnet_gateway_requests_total Requests by route (service) and status class.")
    add("# TYPE flatnet_gateway_requests_total counter")
    for _, r in ipairs(req) do
        add(string.format('flatnet_gateway_requests_total{service="%s",status="%s"} %s',
            M.escape(r[1]), M.escape(r[2]), num(r[3])))
    end
    add("# HELP flatnet_gateway_upstream_latency_seconds Upstream response time (all tries of a request).")
    add("# TYPE flatnet_gateway_upstream_latency_seconds histogram")
    for _, svc in ipairs(sorted(hist)) do
        local h, cum = hist[svc], 0
        local s = M.escape(svc)
        for i, le in ipairs(M.BUCKETS) do
            cum = cum + (h.buckets[i] or 0)
            add(string.format('flatnet_gateway_upstream_latency_seconds_bucket{service="%s",le="%s"} %s',
                s, tostring(le), num(cum)))
        end
        cum = cum + (h.buckets[#M.BUCKETS + 1] or 0)
        add(string.format('flatnet_gateway_upstream_latency_seconds_bucket{service="%s",le="+Inf"} %s',
            s, num(cum)))
        add(string.format('flatnet_gateway_upstream_latency_seconds_sum{service="%s"} %s', s, num(h.sum)))
        add(string.format('flatnet_gateway_upstream_latency_seconds_count{service="%s"} %s', s, num(h.count)))
    end
    add("# HELP flatnet_gateway_target_up 1 while the gateway sends traffic to the target (health checks).")
    add("# TYPE flatnet_gateway_target_up gauge")
    local seen = {}
    for _, r in ipairs(routes) do
        for _, t in ipairs(r.targets or {}) do
            local svc = M.service_of(r)
            local key = svc .. SEP .. t
            if not seen[key] then
                seen[key] = true
                add(string.format('flatnet_gateway_target_up{service="%s",target="%s"} %d',
                    M.escape(svc), M.escape(t), is_up(t) and 1 or 0))
            end
        end
    end
    add("# HELP flatnet_gateway_routes Routes in the gateway's table now.")
    add("# TYPE flatnet_gateway_routes gauge")
    add("flatnet_gateway_routes " .. #routes)
    if keeper then
        add("# HELP flatnet_gateway_route_updates_total The route keeper's rounds that ran the route command "
            .. "(ok, failed) or refused route_url's answer (refused: wrong range or next hop, garbage, no answer).")
        add("# TYPE flatnet_gateway_route_updates_total counter")
        for _, r in ipairs({ "ok", "failed", "refused" }) do
            add(string.format('flatnet_gateway_route_updates_total{result="%s"} %s', r, num(keeper[r] or 0)))
        end
        add("# HELP flatnet_gateway_route_via 1 for the next hop the Flatnet route was last set to.")
        add("# TYPE flatnet_gateway_route_via gauge")
        if keeper.via then
            add(string.format('flatnet_gateway_route_via{via="%s"} 1', M.escape(keeper.via)))
        end
    end
    return table.concat(out, "\n") .. "\n"
end

-- nginx entry points ---------------------------------------------------------------

--- log_by_lua: count this request under its route's service.
function M.log()
    local dict = ngx.shared.flatnet_metrics
    if not dict then
        return
    end
    local route = require("flatnet.gateway.balancer").route()
    M.observe(dict, route and M.service_of(route), ngx.status, ngx.var.upstream_response_time)
end

--- content_by_lua for GET /metrics.
function M.serve()
    local state = require("flatnet.gateway.state")
    local dict = ngx.shared.flatnet_metrics
    local h = state.health()
    local keeper = state.settings.route_url ~= "" and require("flatnet.gateway.routekeeper").status() or nil
    local body = M.render(dict, dict:get_keys(0), state.routes().list, function(t)
        return h:is_up(t)
    end, keeper)
    ngx.header["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
    ngx.print(body)
end

return M
