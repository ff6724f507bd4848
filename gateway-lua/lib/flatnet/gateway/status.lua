-- The status page: routes with target health, catalog sources, static routes. HTML or ?format=json.
local cjson = require("cjson.safe")
local pages = require("flatnet.gateway.pages")
local respond = require("flatnet.gateway.respond")
local state = require("flatnet.gateway.state")

local M = {}

function M.collect()
    local h = state.health()
    local data = {
        now = ngx.now(),
        generation = state.generation(),
        routes = {},
        sources = {},
        static = state.get_json("static:status"),
        warnings = state.get_json("routes:warnings") or {},
        updated_at = state.dict:get("routes:updated_at"),
    }
    for _, r in ipairs(state.routes().list) do
        local targets = {}
        for i, t in ipairs(r.targets) do
            targets[i] = h:state(t)
            targets[i].node = r.nodes and r.nodes[t] or nil
        end
        data.routes[#data.routes + 1] = {
            host = r.host, prefix = r.prefix, origin = r.origin, service = r.service, targets = targets,
        }
    end
    for _, url in ipairs(state.settings.catalog_urls) do
        data.sources[#data.sources + 1] = state.get_json("src:" .. url) or { url = url }
    end
    if state.settings.route_url ~= "" then
        data.route = require("flatnet.gateway.routekeeper").status()
    end
    return data
end

function M.handle()
    local data = M.collect()
    if ngx.var.arg_format == "json" then
        return respond.send(200, cjson.encode(data) .. "\n", "application/json")
    end
    return respond.send(200, pages.status(data))
end

return M
