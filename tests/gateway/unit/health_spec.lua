package.path = "tests/gateway/unit/?.lua;" .. package.path
local health = require("flatnet.gateway.health")
local balance = require("flatnet.gateway.balance")
local fake_store = require("fake_store")

describe("health", function()
    local store, h
    before_each(function()
        store = fake_store.new()
        h = health.new(store, { fail_threshold = 3, fail_window = 10, down_time = 30, now = store.now })
    end)

    it("treats unknown targets as up", function()
        assert.is_true(h:is_up("10.87.1.5:3000"))
        assert.equal("unchecked", h:state("10.87.1.5:3000").active)
    end)

    it("marks a target down after N passive failures within the window", function()
        local t = "10.87.1.5:3000"
        assert.is_false(h:passive_failure(t, "failed"))
        assert.is_false(h:passive_failure(t, "failed"))
        assert.is_true(h:is_up(t))
        assert.is_true(h:passive_failure(t, "failed"))
        assert.is_false(h:is_up(t))
        assert.matches("3 failed attempts", h:state(t).reason)
        -- further failures while down do not re-mark it
        assert.is_false(h:passive_failure(t, "failed"))
    end)

    it("forgets passive failures older than the window", function()
        local t = "10.87.1.5:3000"
        h:passive_failure(t)
        h:passive_failure(t)
        store:advance(11)
        assert.is_false(h:passive_failure(t))
        assert.is_true(h:is_up(t))
    end)

    it("gives a passively-down target traffic again after down_time", function()
        local t = "10.87.1.5:3000"
        for _ = 1, 3 do
            h:passive_failure(t)
        end
        store:advance(29)
        assert.is_false(h:is_up(t))
        store:advance(2)
        assert.is_true(h:is_up(t))
    end)

    it("ends a passive down at the first successful active check", function()
        local t = "10.87.1.5:3000"
        for _ = 1, 3 do
            h:passive_failure(t)
        end
        assert.is_false(h:is_up(t))
        -- A failed check changes nothing; a successful one brings it back now,
        -- not after down_time (30 s here).
        h:active_result(t, false, "connection refused")
        assert.is_false(h:is_up(t))
        store:advance(1)
        assert.is_true((h:active_result(t, true)))
        assert.is_true(h:is_up(t))
        -- And the failures before it do not count toward the next down.
        assert.is_false(h:passive_failure(t))
        assert.is_true(h:is_up(t))
    end)

    it("follows active checks and reports changes", function()
        local t = "10.87.1.6:80"
        assert.is_true((h:active_result(t, false, "connection refused")))
        assert.is_false(h:is_up(t))
        assert.equal("active check down: connection refused", h:state(t).reason)
        assert.is_false((h:active_result(t, false, "connection refused")))
        assert.is_true((h:active_result(t, true)))
        assert.is_true(h:is_up(t))
        assert.is_false((h:active_result(t, true)))
    end)

    it("takes ngx's connect result 1 as success, and a repeated success is no change", function()
        local t = "10.87.1.6:80"
        assert.is_false((h:active_result(t, 1)))
        assert.is_false((h:active_result(t, 1)))
        assert.equal(0, h:generation())
        assert.is_true(h:is_up(t))
    end)

    it("marks down after two timed-out checks in a row, and at once when refused", function()
        local t = "10.87.1.6:80"
        h:active_result(t, 1)
        -- One lost SYN: the check times out before TCP retransmits. Still up.
        assert.is_false((h:active_result(t, nil, "timeout")))
        assert.is_true(h:is_up(t))
        assert.equal(0, h:generation())
        -- A success in between starts the count again.
        h:active_result(t, 1)
        assert.is_false((h:active_result(t, nil, "timeout")))
        assert.is_true(h:is_up(t))
        assert.is_true((h:active_result(t, nil, "timeout")))
        assert.is_false(h:is_up(t))
        assert.matches("2 checks in a row", h:state(t).reason)
        -- Refused: the host answered that nothing listens.
        local r = "10.87.1.7:80"
        assert.is_true((h:active_result(r, nil, "connection refused")))
        assert.is_false(h:is_up(r))
    end)

    it("keeps its active state alive while timeouts are being counted", function()
        local t = "10.87.1.6:80"
        h:active_result(t, nil, "connection refused")
        assert.is_false(h:is_up(t))
        store:advance(59)
        assert.is_false((h:active_result(t, nil, "timeout")))
        store:advance(59)
        -- The refusal's entry was renewed by the pending timeout, not dropped.
        assert.is_false(h:is_up(t))
    end)

    it("lets active results expire if checks stop", function()
        local t = "10.87.1.6:80"
        h.active_ttl = 15
        h:active_result(t, false, "timeout")
        store:advance(16)
        assert.is_true(h:is_up(t))
    end)

    it("lists the up targets of a route", function()
        h:active_result("10.87.0.2:1", false, "connection refused")
        assert.same({ "10.87.0.1:1", "10.87.0.3:1" }, h:up_targets({ "10.87.0.1:1", "10.87.0.2:1", "10.87.0.3:1" }))
    end)
end)

describe("health generation", function()
    it("moves when a target goes down, not when nothing changes", function()
        local store = fake_store.new()
        local h = health.new(store, { fail_threshold = 2, now = store.now })
        local g0 = h:generation()
        h:passive_failure("10.87.0.1:80", "refused")
        assert.equal(g0, h:generation(), "one failure does not mark it down")
        h:passive_failure("10.87.0.1:80", "refused")
        local g1 = h:generation()
        assert.is_true(g1 > g0)
        h:active_result("10.87.0.2:80", true)
        assert.equal(g1, h:generation(), "an up target staying up is no change")
        h:active_result("10.87.0.2:80", false, "timeout")
        assert.equal(g1, h:generation(), "one timed-out check is no change")
        h:active_result("10.87.0.2:80", false, "timeout")
        assert.is_true(h:generation() > g1)
    end)
end)

describe("round robin", function()
    local function up_unless(down)
        return function(_, t)
            return not down[t]
        end
    end

    it("rotates the start over all targets", function()
        local seen, pos = {}, nil
        for _ = 1, 6 do
            pos = balance.advance(pos, 3)
            seen[pos] = (seen[pos] or 0) + 1
        end
        assert.same({ 2, 2, 2 }, seen)
        assert.equal(1, balance.advance(nil, 2))
    end)

    it("orders the healthy targets from the start, skipping the down ones", function()
        local ts = { "a", "b", "c", "d" }
        assert.same({ 3, 4, 1, 2 }, balance.up_order(ts, 3, up_unless({})))
        assert.same({ 4, 1 }, balance.up_order(ts, 2, up_unless({ b = true, c = true })))
        assert.same({}, balance.up_order(ts, 1, up_unless({ a = true, b = true, c = true, d = true })))
    end)

    it("retries the next target still up, else the next untried one", function()
        local ts = { "a", "b", "c" }
        local order = { 2, 3, 1 } -- b, c, a
        assert.equal(2, balance.retry_pick(order, 2, ts, up_unless({})))
        -- c went down meanwhile: skip to a
        assert.equal(3, balance.retry_pick(order, 2, ts, up_unless({ c = true })))
        -- everything left is down: still try the next one rather than nothing
        assert.equal(2, balance.retry_pick(order, 2, ts, up_unless({ c = true, a = true })))
    end)

    it("passes the health object through without a closure", function()
        local seen
        local h = { down = { b = true } }
        local function is_up(self, t)
            seen = self
            return not self.down[t]
        end
        assert.same({ 1, 3 }, balance.up_order({ "a", "b", "c" }, 1, is_up, h))
        assert.equal(h, seen)
    end)
end)
