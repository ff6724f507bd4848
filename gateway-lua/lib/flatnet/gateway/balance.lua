-- Round-robin choice of the next target. Pure Lua.
local M = {}

--- Pick a target index, starting at position `start` (1-based) and walking round,
-- skipping targets for which usable(target) is false. Returns index or nil.
function M.pick(targets, start, usable)
    local n = #targets
    for i = 0, n - 1 do
        local idx = (start - 1 + i) % n + 1
        if usable(targets[idx]) then
            return idx
        end
    end
    return nil
end

--- A per-key round-robin counter (worker-local; each worker rotates on its own,
-- which still spreads load evenly and needs no locking).
function M.counter()
    local counts = {}
    return function(key, n)
        local c = (counts[key] or 0) % n + 1
        counts[key] = c
        return c
    end
end

return M
