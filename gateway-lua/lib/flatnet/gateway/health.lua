-- Target health: passive (failed proxy attempts) and active (periodic TCP connects).
-- Sans-IO: state lives in a store with the ngx.shared.DICT interface
-- (get, set(key, value, ttl), incr(key, n, init, init_ttl), delete), so every worker
-- sees the same health, and busted can use a table-backed fake with a fake clock.
--
-- A target is down while either
--   * passive: fail_threshold connection failures happened within fail_window seconds;
--     it stays down for down_time seconds, or until an active check succeeds, or
--   * active: the last TCP connect check failed (the entry expires if checks stop).
-- A target nobody has judged yet is up.
local M = {}
M.__index = M

local DEFAULTS = { fail_threshold = 3, fail_window = 10, down_time = 10, active_ttl = 60 }

function M.new(store, opts)
    opts = opts or {}
    local self = setmetatable({ store = store }, M)
    for k, v in pairs(DEFAULTS) do
        self[k] = opts[k] or v
    end
    self.now = opts.now or os.time
    return self
end

--- Record one failed attempt (connect error or timeout) against target.
-- Returns true when this failure marks the target down.
function M:passive_failure(target, why)
    local store = self.store
    if store:get("pd:" .. target) then
        return false
    end
    local n = store:incr("pf:" .. target, 1, 0, self.fail_window) or 1
    if n < self.fail_threshold then
        return false
    end
    store:set("pd:" .. target, string.format("%d failed attempts within %ds (last: %s)",
        n, self.fail_window, why or "error"), self.down_time)
    store:set("pdt:" .. target, self.now(), self.down_time)
    store:delete("pf:" .. target)
    store:incr("health:gen", 1, 0)
    return true
end

--- Record an active check result. Returns changed (bool), previous state string or nil.
-- A successful check also ends a passive down: the target accepts connections
-- again (a restarted container, a rebooted host), so it gets traffic at the
-- next check instead of after the rest of down_time.
function M:active_result(target, ok, err)
    local store = self.store
    local prev = store:get("a:" .. target)
    local new = ok and "up" or ("down: " .. tostring(err or "check failed"))
    store:set("a:" .. target, new, self.active_ttl)
    store:set("at:" .. target, self.now(), self.active_ttl)
    local changed = (prev == nil and not ok) or (prev ~= nil and (prev == "up") ~= ok)
    if ok and store:get("pd:" .. target) then
        store:delete("pd:" .. target)
        store:delete("pdt:" .. target)
        store:delete("pf:" .. target)
        changed = true
    end
    if changed then
        store:incr("health:gen", 1, 0)
    end
    return changed, prev
end

--- A counter that moves whenever a target goes down (an up target can only come back
-- by an entry expiring, which needs no notice): cache "up" answers until it moves.
function M:generation()
    return self.store:get("health:gen") or 0
end

function M:is_up(target)
    local store = self.store
    if store:get("pd:" .. target) then
        return false
    end
    local a = store:get("a:" .. target)
    return a == nil or a == "up"
end

--- Everything known about a target, for the status page and error pages.
function M:state(target)
    local store = self.store
    local passive = store:get("pd:" .. target)
    local active = store:get("a:" .. target)
    local reason
    if passive then
        reason = "passive: " .. passive
    elseif active and active ~= "up" then
        reason = "active check " .. active
    end
    return {
        target = target,
        up = reason == nil,
        reason = reason,
        active = active or "unchecked",
        checked_at = store:get("at:" .. target),
        down_since = passive and store:get("pdt:" .. target) or nil,
        recent_failures = store:get("pf:" .. target) or 0,
    }
end

--- The targets of a list that are up, in order.
function M:up_targets(targets)
    local up = {}
    for _, t in ipairs(targets) do
        if self:is_up(t) then
            up[#up + 1] = t
        end
    end
    return up
end

return M
