local config = require("flatnet.gateway.config")
local template = require("flatnet.gateway.template")

local function load(text)
    if not text:find("flatnet_cidr", 1, true) then
        text = text .. "\nflatnet_cidr = 10.87.0.0/16\n"
    end
    local raw, err = config.parse(text)
    if not raw then
        return nil, err
    end
    return config.finish(raw)
end

describe("gateway config", function()
    it("applies defaults and collects list keys", function()
        local cfg = assert(load([[
# comment
domain = Flatnet.Test
allow = 192.168.1.0/24, 10.0.0.1
allow = 172.16.0.0/12
catalog_url = http://10.87.0.1:7070/v1/catalog
]]))
        assert.equal("flatnet.test", cfg.domain)
        assert.same({ "80" }, cfg.listen)
        assert.same({ "192.168.1.0/24", "10.0.0.1", "172.16.0.0/12" }, cfg.allow)
        assert.equal(5, cfg.refresh_interval)
        assert.equal("gateway.flatnet.test", cfg.status_host)
    end)

    it("takes the LAN DNS relay: listen addresses and the Flatnet DNS upstream", function()
        local cfg = assert(load([[
domain = d.test
catalog_url = http://10.87.1.1:7870/v1/catalog/all
dns_listen = 192.168.10.5:53
dns_upstream = 10.87.1.1:5300
]]))
        assert.same({ "192.168.10.5:53" }, cfg.dns_listen)
        assert.equal("10.87.1.1:5300", cfg.dns_upstream)
        local none = assert(load("domain = d.test\ncatalog_url = http://x/\n"))
        assert.same({}, none.dns_listen)
    end)

    local bad = {
        { "catalog_url = http://x/", "domain" },
        { "domain = d.test\nfoo = 1\n", "unknown key" },
        { "domain = d.test\ncatalog_url = https://x/", "catalog_url" },
        { "domain = d.test\ncatalog_url = http://x/\nallow = 10.0.0.0/33", "allow" },
        { "domain = d.test\ncatalog_url = http://x/\nlisten_tls = 443", "tls_certificate" },
        { "domain = d.test\ncatalog_url = http://x/\nrefresh_interval = 0", "refresh_interval" },
        { "domain = d.test\ncatalog_url = http://x/\nstatic_routes = /x;evil", "not allowed" },
        { "domain = d.test", "no routes" },
        { "domain = d.test\ndomain = e.test", "twice" },
        { "domain = d.test\ncatalog_url = http://x/\nlisten = 80x", "listen" },
        { "domain = d.test\ncatalog_url = http://x/\ndns_listen = 53", "dns_upstream" },
        { "domain = d.test\ncatalog_url = http://x/\nflatnet_cidr = ", "flatnet_cidr" },
        { "domain = d.test\ncatalog_url = http://x/\nflatnet_cidr = 10.87.0.1", "flatnet_cidr" },
        { "domain = d.test\ncatalog_url = http://x/\nflatnet_cidr = 10.87.0.0/16\nreplicas = a.b", "replicas" },
        { "domain = d.test\ncatalog_url = http://x/\ndns_listen = 53\ndns_upstream = 10.87.1.1", "dns_upstream" },
        { "domain = d.test\ncatalog_url = http://x/\ndns_listen = x:53\ndns_upstream = 10.87.1.1:5300", "dns_listen" },
        { "domain = d.test\ncatalog_url = http://x/\ndns_upstream = 10.87.1.1:5300", "dns_listen" },
        { "domain = d.test\ncatalog_url = http://x/\ndns_listen = 53\ndns_upstream = 10.87.1.1:53", "port 53 is Flatnet DNS" },
        { "domain = d.test\ncatalog_url = http://x/\nflatnet_cidr = 10.87.0.0/16\nhost_targets = 10.87.1.1", "host_targets" },
        { "domain = d.test\ncatalog_url = http://x/\nflatnet_cidr = 10.87.0.0/16\nhost_targets = 127.0.0.1:53", "host_targets" },
        { "domain = d.test\ncatalog_url = http://x/\nflatnet_cidr = 10.87.0.0/16\nroute_url = http://127.0.0.1:7070/v1/route",
            "go together" },
        { "domain = d.test\ncatalog_url = http://x/\nflatnet_cidr = 10.87.0.0/16\nroute_url = http://127.0.0.1:7070/"
            .. "\nroute_command = ip route replace $cidr", "must use %$via" },
        { "domain = d.test\ncatalog_url = http://x/\nflatnet_cidr = 10.87.0.0/16\nroute_url = http://127.0.0.1:7070/"
            .. "\nroute_command = ip route replace $cidr via $via dev $dev", "unknown placeholder %$dev" },
        { "domain = d.test\ncatalog_url = http://x/\nflatnet_cidr = 10.87.0.0/16\nroute_url = ftp://x/"
            .. "\nroute_command = ip route replace $cidr via $via", "route_url" },
    }
    for _, case in ipairs(bad) do
        it("rejects " .. case[1]:gsub("\n", "; "), function()
            local cfg, err = load(case[1])
            assert.is_nil(cfg)
            assert.matches(case[2], err)
        end)
    end

    it("serialises runtime settings as a Lua literal that loads back", function()
        local cfg = assert(load("domain = d.test\ncatalog_url = http://a/\ncatalog_url = http://b/\n"))
        local s = config.runtime_settings(cfg)
        local lit = config.lua_literal(s)
        local back = assert((loadstring or load)("return " .. lit))()
        assert.same(s, back)
    end)
end)

describe("template", function()
    it("substitutes variables and sections", function()
        assert.equal("a 1\nc\n", template.render("a {{x}}\n{{#on}}\nc\n{{/on}}\n{{#off}}\nd\n{{/off}}\n",
            { x = 1, on = true, off = false }))
    end)
    it("refuses unknown names", function()
        local out, err = template.render("{{nope}}", {})
        assert.is_nil(out)
        assert.matches("unknown variable nope", err)
    end)
end)
