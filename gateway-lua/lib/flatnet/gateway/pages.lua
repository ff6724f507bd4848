-- HTML pages shown to people: errors and the status page. Pure Lua (strings in, HTML out).
local html = require("flatnet.gateway.text").html

local M = {}

local STYLE = [[
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:60em;padding:0 1em;color:#222}
h1{font-size:1.5em}h1 small{color:#888;font-weight:normal}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}
.up{color:#070}.down{color:#b00}code{background:#f4f4f4;padding:0 .2em}footer{margin-top:2em;color:#888}
]]

function M.layout(title, body)
    return table.concat({
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">",
        "<meta name=\"viewport\" content=\"width=device-width\"><title>", html(title), "</title><style>",
        STYLE, "</style></head><body>\n", body,
        "\n<footer>Flatnet gateway</footer></body></html>\n",
    })
end

local function service_links(list, scheme)
    if #list == 0 then
        return "<p>The gateway knows no services yet.</p>"
    end
    local out = { "<ul>" }
    for _, r in ipairs(list) do
        local url = scheme .. "://" .. r.host .. r.prefix
        out[#out + 1] = string.format("<li><a href=\"%s\">%s</a></li>", html(url), html(r.host .. r.prefix))
    end
    out[#out + 1] = "</ul>"
    return table.concat(out)
end

--- 404: no route for this host/path.
function M.no_route(host, path, list, scheme)
    return M.layout("No such service", table.concat({
        "<h1>No service at <code>", html(host or "?"), "</code> <small>404</small></h1>",
        "<p>The Flatnet gateway has no route for <code>", html((host or "?") .. (path or "")),
        "</code>. Known services:</p>", service_links(list, scheme or "http"),
    }))
end

local function target_rows(states)
    local out = { "<table><tr><th>target</th><th>health</th></tr>" }
    for _, st in ipairs(states) do
        out[#out + 1] = string.format("<tr><td><code>%s</code></td><td class=\"%s\">%s</td></tr>",
            html(st.target), st.up and "up" or "down", html(st.up and "up" or ("down: " .. st.reason)))
    end
    out[#out + 1] = "</table>"
    return table.concat(out)
end

--- 503: every target of the route is marked down.
function M.all_down(host, route, states)
    return M.layout("Service unavailable", table.concat({
        "<h1><code>", html(host .. route.prefix), "</code> is unavailable <small>503</small></h1>",
        "<p>All ", #states, " target(s) of this service are down, so the gateway did not try them. ",
        "It checks them again every few seconds; reload in a moment.</p>", target_rows(states),
    }))
end

--- 502/504: the targets were tried and failed.
function M.upstream_failed(host, status, tried)
    local what = status == 504 and "did not answer in time" or "refused or dropped the connection"
    return M.layout("Bad gateway", table.concat({
        "<h1><code>", html(host), "</code> failed <small>", status, "</small></h1>",
        "<p>The gateway forwarded the request but the service ", what,
        ". Tried: <code>", html(tried ~= "" and tried or "none"), "</code>.</p>",
    }))
end

--- 500: the gateway itself failed (should not happen; the error log says why).
function M.internal_error(host)
    return M.layout("Gateway error", table.concat({
        "<h1>Gateway error for <code>", html(host or "?"), "</code> <small>500</small></h1>",
        "<p>The gateway could not handle this request. Its error log has the details.</p>",
    }))
end

--- 403: the client is not in the allow list.
function M.forbidden(client)
    return M.layout("Forbidden", table.concat({
        "<h1>Access denied <small>403</small></h1>",
        "<p>Your address <code>", html(client or "?"),
        "</code> is not in the gateway's allow list. Ask the Flatnet administrator to add your subnet.</p>",
    }))
end

local function age(now, t)
    if not t then
        return "never"
    end
    return string.format("%.0fs ago", now - t)
end

--- The status page. data: {now=, generation=, routes={{host,prefix,origin,service,targets={state...}}},
-- sources={...}, static=..., warnings={...}}
function M.status(data)
    local out = { "<h1>Flatnet gateway status</h1>",
        string.format("<p>Route table generation %d, %d routes.</p>", data.generation, #data.routes),
        "<h2>Routes</h2><table><tr><th>host + prefix</th><th>origin</th><th>targets</th></tr>" }
    for _, r in ipairs(data.routes) do
        local ts = {}
        for _, st in ipairs(r.targets) do
            ts[#ts + 1] = string.format("<span class=\"%s\"><code>%s</code> %s</span>",
                st.up and "up" or "down", html(st.target), html(st.up and "up" or ("down: " .. st.reason)))
        end
        out[#out + 1] = string.format("<tr><td>%s</td><td>%s</td><td>%s</td></tr>",
            html(r.host .. r.prefix), html(r.origin), table.concat(ts, "<br>"))
    end
    out[#out + 1] = "</table><h2>Catalog sources</h2><table><tr><th>URL</th><th>state</th><th>last good</th></tr>"
    for _, s in ipairs(data.sources) do
        local st
        if s.ok == nil then
            st = "not fetched yet"
        elseif s.ok then
            st = string.format("<span class=\"up\">ok</span>: %s services from node %s",
                tostring(s.services), html(s.node or "?"))
        else
            st = string.format("<span class=\"down\">error</span>: %s; %s", html(s.error), html(s.kept or ""))
        end
        out[#out + 1] = string.format("<tr><td><code>%s</code></td><td>%s</td><td>%s</td></tr>",
            html(s.url), st, age(data.now, s.last_ok_at))
    end
    out[#out + 1] = "</table>"
    if data.static then
        local s = data.static
        out[#out + 1] = string.format("<h2>Static routes</h2><p><code>%s</code>: %s</p>", html(s.path),
            s.ok and ("ok, " .. tostring(s.routes) .. " routes")
            or ("<span class=\"down\">error</span>: " .. html(s.error) .. "; " .. html(s.kept or "")))
    end
    if #data.warnings > 0 then
        out[#out + 1] = "<h2>Warnings</h2><ul>"
        for _, w in ipairs(data.warnings) do
            out[#out + 1] = "<li>" .. html(w) .. "</li>"
        end
        out[#out + 1] = "</ul>"
    end
    return M.layout("Flatnet gateway status", table.concat(out))
end

return M
