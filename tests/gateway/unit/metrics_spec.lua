local metrics = require("flatnet.gateway.metrics")
local fake_store = require("fake_store")

describe("gateway metrics", function()
    it("classes statuses and sums upstream times across tries", function()
        assert.equal("2xx", metrics.status_class(204))
        assert.equal("5xx", metrics.status_class("502"))
        assert.equal("other", metrics.status_class(0))
        assert.equal("other", metrics.status_class(nil))
        assert.near(0.016, metrics.upstream_seconds("0.010, 0.002 : 0.004"), 1e-9)
        assert.is_nil(metrics.upstream_seconds("-"))
        assert.is_nil(metrics.upstream_seconds(nil))
    end)

    it("renders counters, a cumulative histogram and target health", function()
        local s = fake_store.new()
        metrics.observe(s, "forgejo", 200, "0.004")
        metrics.observe(s, "forgejo", 200, "0.2")
        metrics.observe(s, "forgejo", 502, "3.0, 0.5")
        metrics.observe(s, "forgejo", 502, "30")
        metrics.observe(s, nil, 404, nil)
        local routes = {
            { service = "forgejo", targets = { "10.87.1.2:3000", "10.87.2.2:3000" } },
            { host = "wiki.flatnet.example", targets = { "10.87.1.9:80" } },
        }
        local down = { ["10.87.2.2:3000"] = true }
        local text = metrics.render(s, s:get_keys(), routes, function(t)
            return not down[t]
        end)
        local function has(line)
            assert.truthy(text:find(line, 1, true), "missing " .. line .. " in\n" .. text)
        end
        has('flatnet_gateway_requests_total{service="forgejo",status="2xx"} 2')
        has('flatnet_gateway_requests_total{service="forgejo",status="5xx"} 2')
        has('flatnet_gateway_requests_total{service="_unrouted",status="4xx"} 1')
        has('flatnet_gateway_upstream_latency_seconds_bucket{service="forgejo",le="0.005"} 1')
        has('flatnet_gateway_upstream_latency_seconds_bucket{service="forgejo",le="0.25"} 2')
        has('flatnet_gateway_upstream_latency_seconds_bucket{service="forgejo",le="5"} 3')
        has('flatnet_gateway_upstream_latency_seconds_bucket{service="forgejo",le="10"} 3')
        has('flatnet_gateway_upstream_latency_seconds_bucket{service="forgejo",le="+Inf"} 4')
        has('flatnet_gateway_upstream_latency_seconds_count{service="forgejo"} 4')
        has('flatnet_gateway_upstream_latency_seconds_sum{service="forgejo"} 33.704000')
        has('flatnet_gateway_target_up{service="forgejo",target="10.87.1.2:3000"} 1')
        has('flatnet_gateway_target_up{service="forgejo",target="10.87.2.2:3000"} 0')
        has('flatnet_gateway_target_up{service="wiki.flatnet.example",target="10.87.1.9:80"} 1')
        has("flatnet_gateway_routes 2")
        -- No latency series for the request no upstream answered.
        assert.falsy(text:find('latency_seconds_count{service="_unrouted"}', 1, true))
    end)

    it("escapes label values", function()
        assert.equal('a\\"b\\\\c\\nd', metrics.escape('a"b\\c\nd'))
    end)
end)
