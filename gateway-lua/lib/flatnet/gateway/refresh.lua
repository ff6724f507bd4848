-- The refresh job: fetch every catalog URL, read the static routes file, rebuild and
-- publish routes. A source that fails keeps its last good catalog; a bad static file
-- keeps the last good static routes. Runs from ngx.timer in any worker, once per period.
local catalog = require("flatnet.gateway.catalog")
local httpclient = require("flatnet.gateway.httpclient")
local ipv4 = require("flatnet.gateway.ipv4")
local routes = require("flatnet.gateway.routes")
local static = require("flatnet.gateway.static")
local state = require("flatnet.gateway.state")

local M = {}

local LOG = "flatnet gateway: "

local function fetch_source(url)
    local s = state.settings
    local body, err = httpclient.get(url, { timeout = s.catalog_timeout * 1000, max_body = catalog.MAX_BYTES })
    local cat
    if body then
        cat, err = catalog.decode(body)
    end
    local prev = state.get_json("src:" .. url) or {}
    local now = ngx.now()
    local st = { url = url, checked_at = now, last_ok_at = prev.last_ok_at, node = prev.node,
        services = prev.services }
    if cat then
        state.set_json("srcdata:" .. url, cat)
        st.ok, st.last_ok_at, st.node, st.services = true, now, cat.node, #cat.services
        if prev.ok ~= true then
            ngx.log(ngx.NOTICE, LOG, "catalog ", url, ": ok, ", #cat.services, " services from node ", cat.node)
        end
    else
        st.ok, st.error = false, err
        local kept = state.dict:get("srcdata:" .. url) and "previous routes from it are kept"
            or "no routes from it yet"
        st.kept = kept
        if prev.error ~= err then
            ngx.log(ngx.ERR, LOG, "catalog ", url, " rejected: ", err, "; ", kept)
        end
    end
    state.set_json("src:" .. url, st)
end

--- Read and parse the static routes file into the shared dict. Returns true if usable.
function M.load_static()
    local s = state.settings
    if not s.static_routes or s.static_routes == "" then
        return true
    end
    local prev = state.get_json("static:status") or {}
    local st = { path = s.static_routes, checked_at = ngx.now() }
    local f, err = io.open(s.static_routes, "rb")
    local parsed
    if f then
        local text = f:read("*a")
        f:close()
        parsed, err = static.parse(text or "", s.domain)
    end
    if parsed then
        state.set_json("static:data", parsed)
        st.ok, st.routes = true, #parsed.routes
        if prev.ok ~= true then
            ngx.log(ngx.NOTICE, LOG, "static routes ", s.static_routes, ": ok, ", #parsed.routes, " routes")
        end
    else
        st.ok, st.error = false, err
        st.kept = state.dict:get("static:data") and "previous static routes are kept" or "no static routes"
        if prev.error ~= err then
            ngx.log(ngx.ERR, LOG, "static routes ", s.static_routes, " rejected: ", err, "; ", st.kept)
        end
    end
    state.set_json("static:status", st)
    return parsed ~= nil
end

--- Rebuild routes from the stored last-good sources and publish them.
function M.rebuild()
    local s = state.settings
    local cats = {}
    for _, url in ipairs(s.catalog_urls) do
        local c = state.get_json("srcdata:" .. url)
        if c then
            cats[#cats + 1] = c
        end
    end
    local cidr = ipv4.parse_cidr(s.flatnet_cidr)
    if cidr then
        cidr.text = s.flatnet_cidr
    end
    local replicas = {}
    for _, r in ipairs(s.replicas or {}) do
        replicas[r:lower()] = true
    end
    local host_targets = {}
    for _, t in ipairs(s.host_targets or {}) do
        host_targets[t] = true
    end
    local list, warnings, seen = routes.build(cats, state.get_json("static:data"), s.domain, {
        cidr = cidr, seen = state.get_json("routes:seen") or {}, now = ngx.now(), replicas = replicas,
        host_targets = host_targets,
    })
    state.set_json("routes:seen", seen)
    local old = state.get_json("routes:warnings") or {}
    if table.concat(old, "\n") ~= table.concat(warnings, "\n") then
        for _, w in ipairs(warnings) do
            ngx.log(ngx.WARN, LOG, w)
        end
    end
    state.set_json("routes:warnings", warnings)
    if state.publish(list) then
        ngx.log(ngx.NOTICE, LOG, "routes updated: ", #list, " routes (generation ", state.generation(), ")")
    end
end

function M.run_once()
    local threads = {}
    for _, url in ipairs(state.settings.catalog_urls) do
        threads[#threads + 1] = ngx.thread.spawn(fetch_source, url)
    end
    for _, t in ipairs(threads) do
        local ok, err = ngx.thread.wait(t)
        if not ok then
            ngx.log(ngx.ERR, LOG, "catalog fetch crashed: ", err)
        end
    end
    M.load_static()
    M.rebuild()
end

--- Timer callback.
M.run = state.timer_job("refresh", "refresh_interval", M, "run_once", "refresh", "; previous routes stay")

return M
