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

    it("lets active results expire if checks stop", function()
        local t = "10.87.1.6:80"
        h.active_ttl = 15
        h:active_result(t, false, "timeout")
        store:advance(16)
        assert.is_true(h:is_up(t))
    end)

    it("lists the up targets of a route", function()
        h:active_result("10.87.0.2:1", false, "timeout")
        assert.same({ "10.87.0.1:1", "10.87.0.3:1" }, h:up_targets({ "10.87.0.1:1", "10.87.0.2:1", "10.87.0.3:1" }))
    end)
end)

describe("round robin", function()
    it("rotates and skips unusable targets", function()
        local ts = { "a", "b", "c" }
        local all = function()
            return true
        end
        assert.equal(1, balance.pick(ts, 1, all))
        assert.equal(3, balance.pick(ts, 3, all))
        assert.equal(3, balance.pick(ts, 2, function(t) return t ~= "b" end))
        assert.equal(1, balance.pick(ts, 2, function(t) return t == "a" end))
        assert.is_nil(balance.pick(ts, 1, function() return false end))
    end)

    it("spreads starts evenly per key", function()
        local next_start = balance.counter()
        local seen = {}
        for _ = 1, 6 do
            local s = next_start("k", 3)
            seen[s] = (seen[s] or 0) + 1
        end
        assert.same({ 2, 2, 2 }, seen)
        assert.equal(1, next_start("other", 2))
    end)
end)
