-- Shared gateway state in one ngx.shared dict: settings, the published route table
-- (JSON + generation), per-source catalog status, and the health store.
-- Each worker keeps a compiled copy of the route table and recompiles when the
-- generation changes, so a new table is swapped in atomically everywhere.
local cjson = require("cjson.safe")
local routes = require("flatnet.gateway.routes")
local health = require("flatnet.gateway.health")

local M = {}

local compiled, compiled_gen
local health_obj

M.settings = nil

function M.setup(settings)
    M.settings = settings
    local dict = ngx.shared[settings.shared_dict]
    if not dict then
        error("flatnet gateway: lua_shared_dict " .. settings.shared_dict .. " is not declared")
    end
    M.dict = dict
    compiled, compiled_gen, health_obj = nil, nil, nil
end

function M.health()
    if not health_obj then
        local s = M.settings
        health_obj = health.new(M.dict, {
            fail_threshold = s.fail_threshold,
            fail_window = s.fail_window,
            down_time = s.down_time,
            active_ttl = math.max(3 * s.health_interval, 10),
            active_timeouts = s.health_timeouts,
            now = ngx.now,
        })
    end
    return health_obj
end

function M.get_json(key)
    local raw = M.dict:get(key)
    if not raw then
        return nil
    end
    return cjson.decode(raw)
end

function M.set_json(key, value)
    local ok, err = M.dict:set(key, cjson.encode(value))
    if not ok then
        ngx.log(ngx.ERR, "flatnet gateway: storing ", key, " in shared dict: ", err)
    end
    return ok
end

--- Publish a new route list if it differs from the current one. Returns true if it changed.
function M.publish(list)
    local js = cjson.encode(list)
    if js == M.dict:get("routes:json") then
        return false
    end
    local ok, err = M.dict:set("routes:json", js)
    if not ok then
        ngx.log(ngx.ERR, "flatnet gateway: cannot store routes: ", err, "; previous routes stay")
        return false
    end
    M.dict:incr("routes:gen", 1, 0)
    M.dict:set("routes:updated_at", ngx.now())
    return true
end

--- The compiled route table of the current generation.
function M.routes()
    local gen = M.dict:get("routes:gen") or 0
    if compiled and gen == compiled_gen then
        return compiled
    end
    local list = M.get_json("routes:json") or {}
    compiled = routes.compile(list)
    compiled_gen = gen
    return compiled
end

function M.generation()
    return M.dict:get("routes:gen") or 0
end

--- A cross-worker "run at most once per period" guard. Returns true if the caller won.
function M.try_lock(name, period)
    if M.dict:get("lock:" .. name .. ":busy") then
        return false
    end
    local ok = M.dict:add("lock:" .. name .. ":recent", true, period)
    if not ok then
        return false
    end
    M.dict:set("lock:" .. name .. ":busy", true, 120)
    return true
end

function M.unlock(name)
    M.dict:delete("lock:" .. name .. ":busy")
end

--- A periodic job's timer callback: `mod[fn]` runs in one worker at most once per
-- 0.8 x settings[interval_key] seconds (try_lock); an error it raises is logged as
-- `what` failed, with `after`.
function M.timer_job(name, interval_key, mod, fn, what, after)
    return function(premature)
        if premature or not M.try_lock(name, M.settings[interval_key] * 0.8) then
            return
        end
        local ok, err = pcall(mod[fn])
        M.unlock(name)
        if not ok then
            ngx.log(ngx.ERR, "flatnet gateway: ", what, " failed: ", err, after or "")
        end
    end
end

return M
