-- Entry points called from nginx.conf: init (init_by_lua) and init_worker.
local refresh = require("flatnet.gateway.refresh")
local checker = require("flatnet.gateway.checker")
local state = require("flatnet.gateway.state")

local M = {}

--- Called once in init_by_lua with the settings rendered into nginx.conf.
-- A broken static routes file at start-up is fatal: nginx refuses to start.
function M.init(settings)
    state.setup(settings)
    if not refresh.load_static() then
        local st = state.get_json("static:status")
        error("flatnet gateway: " .. tostring(st and st.error))
    end
    refresh.rebuild()
end

function M.init_worker()
    local s = state.settings
    state.setup(s) -- fresh per-worker caches
    local ok, err = ngx.timer.at(0, refresh.run)
    if ok then
        ok, err = ngx.timer.every(s.refresh_interval, refresh.run)
    end
    if ok then
        ok, err = require("flatnet.gateway.balancer").start()
    end
    if ok and s.health_interval > 0 then
        ok, err = ngx.timer.every(s.health_interval, checker.run)
    end
    if ok and s.route_url ~= "" then
        local keeper = require("flatnet.gateway.routekeeper")
        ok, err = ngx.timer.at(0, keeper.run)
        if ok then
            ok, err = ngx.timer.every(s.route_interval, keeper.run)
        end
    end
    if not ok then
        ngx.log(ngx.ERR, "flatnet gateway: cannot start timers: ", err)
    end
end

return M
