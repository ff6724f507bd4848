-- A table-backed stand-in for ngx.shared.DICT with a controllable clock.
local M = {}
M.__index = M

function M.new()
    local self = setmetatable({ data = {}, expires = {}, t = 1000 }, M)
    self.now = function()
        return self.t
    end
    return self
end

--- Every live key (ngx.shared.DICT:get_keys(0)).
function M:get_keys()
    local keys = {}
    for k in pairs(self.data) do
        if self:get(k) ~= nil then
            keys[#keys + 1] = k
        end
    end
    table.sort(keys)
    return keys
end

function M:advance(seconds)
    self.t = self.t + seconds
end

function M:get(key)
    local exp = self.expires[key]
    if exp and exp <= self.t then
        self.data[key], self.expires[key] = nil, nil
    end
    return self.data[key]
end

function M:set(key, value, ttl)
    self.data[key] = value
    self.expires[key] = (ttl and ttl > 0) and (self.t + ttl) or nil
    return true
end

function M:add(key, value, ttl)
    if self:get(key) ~= nil then
        return false, "exists"
    end
    return self:set(key, value, ttl)
end

function M:incr(key, n, init, init_ttl)
    local v = self:get(key)
    if v == nil then
        if init == nil then
            return nil, "not found"
        end
        self:set(key, init + n, init_ttl)
        return init + n
    end
    self.data[key] = v + n
    return v + n
end

function M:delete(key)
    self.data[key], self.expires[key] = nil, nil
end

return M
