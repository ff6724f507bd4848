-- A tiny template language for nginx.conf: {{name}} substitutes a value,
-- {{#name}}...{{/name}} keeps a block only when the value is truthy (non-empty).
-- Unknown names are errors, so a typo never renders silently. Pure Lua.
local M = {}

local function truthy(v)
    return v ~= nil and v ~= false and v ~= "" and not (type(v) == "table" and #v == 0)
end

function M.render(tmpl, vars)
    local err
    local out = tmpl:gsub("{{#([%w_]+)}}\n?(.-){{/%1}}\n?", function(name, block)
        if vars[name] == nil then
            err = err or ("template: unknown section " .. name)
        end
        return truthy(vars[name]) and block or ""
    end)
    out = out:gsub("{{([%w_]+)}}", function(name)
        local v = vars[name]
        if v == nil then
            err = err or ("template: unknown variable " .. name)
            return ""
        end
        return tostring(v)
    end)
    if err then
        return nil, err
    end
    return out
end

return M
