-- The route keeper's I/O (see routekeep.lua for what it decides and why): a timer in one
-- worker asks route_url, and runs route_command when the next hop changed or
-- route_reapply seconds have passed. Results go to the shared dict, for the status page
-- and /metrics: route:via, route:applied_at, route:error and the counters
-- route:n:ok, route:n:failed, route:n:refused.
--
-- The command runs with os.execute, which blocks this worker while it runs (route.exe or
-- ip take milliseconds, and only when the route changes or is re-applied); OpenResty's
-- non-blocking ngx.pipe is not in lua-nginx-module on Linux, and the Windows build has
-- one worker either way.
local httpclient = require("flatnet.gateway.httpclient")
local routekeep = require("flatnet.gateway.routekeep")
local state = require("flatnet.gateway.state")

local M = {}

local LOG = "flatnet gateway: route keeper: "

local function count(what)
    state.dict:incr("route:n:" .. what, 1, 0)
end

--- A round that leaves the route alone: counted, shown, logged once per distinct error.
local function failure(kind, msg, last)
    count(kind)
    if state.dict:get("route:error") ~= msg then
        ngx.log(ngx.ERR, LOG, msg, "; the route ", last and ("via " .. last) or "(none yet)", " stays")
    end
    state.dict:set("route:error", msg)
end

local function run_command(cmd)
    local a, b, c = os.execute(cmd .. " 2>&1")
    -- Lua 5.1 returns the status; LuaJIT with 5.2 compatibility, true/false, "exit", code.
    if a == 0 or a == true then
        return true
    end
    return false, string.format("exit %s", tostring(c or a or b))
end

function M.run_once()
    local s = state.settings
    local dict = state.dict
    local last = dict:get("route:via")
    local body, err = httpclient.get(s.route_url, { timeout = s.catalog_timeout * 1000, max_body = 4096 })
    local action, detail = routekeep.decide(body, err, s, last)
    -- The same next hop is applied again every route_reapply seconds, and at once when
    -- the answer comes back after a gap: a WSL restart may hand the VM its old address
    -- while the adapter the route hung on was replaced, taking the route with it.
    local due = last and (ngx.now() - (dict:get("route:applied_at") or 0)) >= s.route_reapply
    local after_gap = dict:get("route:error") ~= nil
    if action == "keep" and detail == "unchanged" and (due or after_gap) then
        action, detail = "apply", last
    end
    dict:set("route:checked_at", ngx.now())
    if action == "refuse" then
        return failure("refused", detail, last)
    end
    if action == "keep" then
        dict:delete("route:error")
        return
    end
    local cmd = routekeep.command(s.route_command, s.flatnet_cidr, detail)
    local ok, why = run_command(cmd)
    if not ok then
        return failure("failed", string.format("%s failed (%s)", cmd, why), last)
    end
    count("ok")
    dict:set("route:via", detail)
    dict:set("route:applied_at", ngx.now())
    dict:delete("route:error")
    if detail ~= last then
        ngx.log(ngx.NOTICE, LOG, s.flatnet_cidr, " now via ", detail, last and (" (was " .. last .. ")") or "",
            ": ", cmd)
    end
end

M.run = state.timer_job("route", "route_interval", M, "run_once", "route keeper run")

--- For the status page and metrics.
function M.status()
    local d = state.dict
    return {
        url = state.settings.route_url,
        via = d:get("route:via"),
        applied_at = d:get("route:applied_at"),
        checked_at = d:get("route:checked_at"),
        error = d:get("route:error"),
        ok = d:get("route:n:ok") or 0,
        failed = d:get("route:n:failed") or 0,
        refused = d:get("route:n:refused") or 0,
    }
end

return M
