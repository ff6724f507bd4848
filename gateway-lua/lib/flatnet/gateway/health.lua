-- Target health: passive (failed proxy attempts) and active (periodic TCP connects).
-- Sans-IO: state lives in a store with the ngx.shared.DICT interface
-- (get, set(key, value, ttl), incr(key, n, init, init_ttl), delete), so every worker
-- sees the same health, and busted can use a table-backed fake with a fake clock.
--
-- A target is down while either
--   * passive: fail_threshold connection failures happened within fail_window seconds;
--     it stays down for down_time seconds, or until an active check succeeds, or
--   * active: the last TCP connect check was refused (nothing listens: down at once), or the
--     last active_timeouts checks in a row timed out (the entry expires if checks stop).
-- A target nobody has judged yet is up.
--
-- Why a timeout alone does not mark a target down: a connect check whose SYN (or SYN-ACK)
-- is lost once waits for TCP's retransmission, which comes after 1 s; a check that gives
-- up before that reports a target that works as dead. With a route's only target that
-- turned one lost packet into seconds of 503s for everyone (issue 34's soak outage).
-- A refused connect is an answer, not a loss, so it still counts at once.
local M = {}
M.__index = M

local DEFAULTS = { fail_threshold = 3, fail_window = 10, down_time = 10, active_ttl = 60, active_timeouts = 2 }

--- Whether a connect error is a timeout (no answer) rather than a refusal or an error.
function M.is_timeout(err)
    return type(err) == "string" and err:find("timeout", 1, true) ~= nil
end

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

--- Record an active check result. Returns changed (bool), the previous state string or
-- nil, and the new one ("up", or "down: why").
-- A successful check also ends a passive down: the target accepts connections
-- again (a restarted container, a rebooted host), so it gets traffic at the
-- next check instead of after the rest of down_time.
function M:active_result(target, ok, err)
    local store = self.store
    -- ngx.socket.tcp's connect returns 1 on success, not true.
    ok = ok and true or false
    local prev = store:get("a:" .. target)
    if ok then
        store:delete("at_n:" .. target)
    elseif M.is_timeout(err) and self.active_timeouts > 1 then
        local n = store:incr("at_n:" .. target, 1, 0, self.active_ttl) or 1
        if n < self.active_timeouts then
            -- Not yet: the state stays as it was (and does not expire meanwhile).
            if prev then
                store:set("a:" .. target, prev, self.active_ttl)
            end
            return false, prev
        end
        err = string.format("%s (%d checks in a row)", tostring(err), n)
    end
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
    return changed, prev, new
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
