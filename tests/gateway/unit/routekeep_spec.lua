local routekeep = require("flatnet.gateway.routekeep")

describe("route keeper decision", function()
    local s = { flatnet_cidr = "10.87.0.0/16" }

    it("applies a new next hop, and keeps an unchanged one", function()
        local body = '{"cidr":"10.87.0.0/16","via":"172.22.48.5","node":"wsl"}'
        assert.same({ "apply", "172.22.48.5" }, { routekeep.decide(body, nil, s, nil) })
        assert.same({ "apply", "172.22.48.5" }, { routekeep.decide(body, nil, s, "172.22.50.9") })
        assert.same({ "keep", "unchanged" }, { routekeep.decide(body, nil, s, "172.22.48.5") })
    end)

    it("needs no route when flatnetd shares this host (mirrored mode)", function()
        local action = routekeep.decide('{"cidr":"10.87.0.0/16","local":true}', nil, s, nil)
        assert.equal("keep", action)
    end)

    it("refuses another range, garbage, nothing, and next hops that are not a host", function()
        local cases = {
            { '{"cidr":"0.0.0.0/0","via":"172.22.48.5"}', "not flatnet_cidr" },
            { '{"cidr":"10.87.0.0/17","via":"172.22.48.5"}', "not flatnet_cidr" },
            { '{"cidr":"192.168.0.0/16","via":"172.22.48.5"}', "not flatnet_cidr" },
            { '{"via":"172.22.48.5"}', "not flatnet_cidr" },
            { "<html>hello</html>", "not JSON" },
            { '"10.87.0.0/16"', "not JSON" },
            { '{"cidr":"10.87.0.0/16"}', "no next hop" },
            { '{"cidr":"10.87.0.0/16","via":"10.87.1.1"}', "inside the Flatnet" },
            { '{"cidr":"10.87.0.0/16","via":"127.0.0.1"}', "not a unicast" },
            { '{"cidr":"10.87.0.0/16","via":"0.0.0.0"}', "not a unicast" },
            { '{"cidr":"10.87.0.0/16","via":"255.255.255.255"}', "not a unicast" },
            { '{"cidr":"10.87.0.0/16","via":"224.0.0.1"}', "not a unicast" },
            { '{"cidr":"10.87.0.0/16","via":"1.2.3.4; rm -rf /"}', "not an IPv4" },
            { '{"cidr":"10.87.0.0/16","via":"172.22.048.5"}', "not an IPv4" },
            { '{"cidr":"10.87.0.0/16","via":5}', "no next hop" },
        }
        for _, c in ipairs(cases) do
            local action, why = routekeep.decide(c[1], nil, s, "172.22.48.5")
            assert.equal("refuse", action, c[1])
            assert.truthy(why:find(c[2], 1, true), c[1] .. " -> " .. why)
        end
        local action, why = routekeep.decide(nil, "connection refused", s, "172.22.48.5")
        assert.equal("refuse", action)
        assert.truthy(why:find("connection refused", 1, true))
    end)

    it("builds the command for the configured range only", function()
        assert.equal("ip route replace 10.87.0.0/16 via 172.22.48.5",
            routekeep.command("ip route replace $cidr via $via", "10.87.0.0/16", "172.22.48.5"))
        assert.equal("route.exe change 10.87.0.0 mask 255.255.0.0 172.22.48.5 || route.exe add 10.87.0.0 "
            .. "mask 255.255.0.0 172.22.48.5",
            routekeep.command("route.exe change $network mask $mask $via || route.exe add $network mask $mask $via",
                "10.87.0.0/16", "172.22.48.5"))
        -- A host-bits-set CIDR is normalised to its network.
        assert.equal("10.87.0.0/16", routekeep.command("$cidr", "10.87.3.4/16", "1.2.3.4"))
    end)
end)
