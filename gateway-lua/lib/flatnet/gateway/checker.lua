-- Active health checks: a TCP connect to every distinct target, from a timer,
-- in parallel light threads. Results go to the shared health store.
local ipv4 = require("flatnet.gateway.ipv4")
local state = require("flatnet.gateway.state")

local M = {}

local BATCH = 32
local LOG = "flatnet gateway: "

local function check(target)
    local ip, port = ipv4.parse_target(target)
    local sock = ngx.socket.tcp()
    sock:settimeout(state.settings.health_timeout * 1000)
    local ok, err = sock:connect(ip, port)
    if ok then
        sock:close()
    end
    local changed, _, now = state.health():active_result(target, ok, err)
    if changed then
        if ok then
            ngx.log(ngx.NOTICE, LOG, "target ", target, " is up again (TCP connect ok)")
        else
            ngx.log(ngx.WARN, LOG, "target ", target, " is down: TCP connect: ", ((now or ""):gsub("^down: ", "")))
        end
    end
end

function M.targets()
    local seen, list = {}, {}
    for _, r in ipairs(state.routes().list) do
        for _, t in ipairs(r.targets) do
            if not seen[t] then
                seen[t] = true
                list[#list + 1] = t
            end
        end
    end
    return list
end

function M.run_once()
    local list = M.targets()
    for i = 1, #list, BATCH do
        local threads = {}
        for j = i, math.min(i + BATCH - 1, #list) do
            threads[#threads + 1] = ngx.thread.spawn(check, list[j])
        end
        for _, t in ipairs(threads) do
            ngx.thread.wait(t)
        end
    end
end

M.run = state.timer_job("health", "health_interval", M, "run_once", "health check run")

return M
