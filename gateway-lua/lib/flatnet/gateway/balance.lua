-- Which target gets a request: round robin over the healthy targets of a route, and the
-- next one to retry after a failure. Pure Lua; health is asked through a function and an
-- argument (is_up(arg, target)) so the per-request path creates no closures.
local M = {}

--- The next round-robin start position for a route of n targets (1-based).
function M.advance(prev, n)
    return (prev or 0) % n + 1
end

--- Indexes of the targets that are up, in round-robin order from `start`.
function M.up_order(targets, start, is_up, arg)
    local n = #targets
    local up = {}
    for k = 0, n - 1 do
        local i = (start - 1 + k) % n + 1
        if is_up(arg, targets[i]) then
            up[#up + 1] = i
        end
    end
    return up
end

--- After a failed try: the position in `order` (from `from` on) of the first target still
-- up; if none is, the next untried one anyway (nginx allowed that many tries).
function M.retry_pick(order, from, targets, is_up, arg)
    for k = from, #order do
        if is_up(arg, targets[order[k]]) then
            return k
        end
    end
    return math.min(from, #order)
end

return M
