-- Safe text for logs and pages: short, printable renderings of untrusted values. Pure Lua.
local M = {}

local MAX_SHOWN = 64

--- Render an untrusted value for an error message: type-tagged, truncated, no control bytes.
function M.show(v)
    local t = type(v)
    if t == "string" then
        local s = v
        local cut = #s > MAX_SHOWN
        if cut then
            s = s:sub(1, MAX_SHOWN)
        end
        s = s:gsub("[%c\128-\255\"\\]", function(ch)
            return string.format("\\x%02x", ch:byte())
        end)
        return '"' .. s .. '"' .. (cut and string.format("... (%d bytes)", #v) or "")
    elseif t == "number" or t == "boolean" then
        return tostring(v)
    elseif t == "table" then
        return "a JSON object or array"
    elseif v == nil then
        return "nothing"
    end
    return "null"
end

local HTML = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }

function M.html(s)
    return (tostring(s):gsub("[&<>\"']", HTML))
end

return M
