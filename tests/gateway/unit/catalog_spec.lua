local catalog = require("flatnet.gateway.catalog")
local cjson = require("cjson")

local GOOD = [[{"version": 1, "node": "host1", "services": [
  {"name": "forgejo", "node": "host1", "ip": "10.87.1.5", "ports": [{"port": 3000, "protocol": "tcp"}]},
  {"name": "Wiki", "node": "host1", "ip": "10.87.1.6", "ports": [{"port": 53, "protocol": "udp"},
                                                                 {"port": 80, "protocol": "tcp"}],
   "labels": {"future": "field"}}]}]]

local function with(mutate)
    local doc = cjson.decode(GOOD)
    mutate(doc)
    return cjson.encode(doc)
end

describe("catalog", function()
    it("accepts the documented format", function()
        local c = assert(catalog.decode(GOOD))
        assert.equal("host1", c.node)
        assert.equal(2, #c.services)
        assert.equal(3000, c.services[1].tcp_port)
        assert.equal("wiki", c.services[2].name)
        assert.equal(80, c.services[2].tcp_port)
        assert.is_nil(c.services[1].owner)
        c = assert(catalog.decode(with(function(d) d.services[1].owner = false end)))
        assert.is_false(c.services[1].owner)
        assert.same({}, c.gateways)
        c = assert(catalog.decode(with(function(d) d.gateways = { "10.87.1.1", "10.87.2.1" } end)))
        assert.same({ "10.87.1.1", "10.87.2.1" }, c.gateways)
    end)

    it("accepts an empty service list", function()
        local c = assert(catalog.decode('{"version":1,"node":"h","services":[]}'))
        assert.equal(0, #c.services)
    end)

    local bad = {
        { "not JSON", "{version: 1", "invalid JSON" },
        { "a JSON array", "[1,2]", "expected a JSON object" },
        { "a JSON string", '"x"', "expected a JSON object" },
        { "version 2", with(function(d) d.version = 2 end), "version: expected 1, got 2" },
        { "version as string", with(function(d) d.version = "1" end), "version: expected 1" },
        { "missing node", with(function(d) d.node = nil end), "node: expected a host name" },
        { "services as object", with(function(d) d.services = { a = 1 } end), "services: expected an array" },
        { "null service", '{"version":1,"node":"h","services":[null]}', "services%[0%]: expected an object, got null" },
        { "name with a dot", with(function(d) d.services[1].name = "a.b" end), "services%[0%]%.name" },
        { "name too long", with(function(d) d.services[2].name = string.rep("x", 5000) end),
            "services%[1%]%.name: .*%(5000 bytes%)" },
        { "name with HTML", with(function(d) d.services[1].name = "<script>" end), "services%[0%]%.name" },
        { "name as number", with(function(d) d.services[1].name = 42 end), "got 42" },
        { "ip as host name", with(function(d) d.services[1].ip = "forgejo.local" end), "services%[0%]%.ip" },
        { "ip out of range", with(function(d) d.services[1].ip = "10.87.1.256" end), "services%[0%]%.ip" },
        { "ip with leading zero", with(function(d) d.services[1].ip = "10.87.01.5" end), "services%[0%]%.ip" },
        { "ip with port", with(function(d) d.services[1].ip = "10.87.1.5:80" end), "services%[0%]%.ip" },
        { "port 0", with(function(d) d.services[1].ports[1].port = 0 end), "ports%[0%]%.port" },
        { "port 65536", with(function(d) d.services[1].ports[1].port = 65536 end), "ports%[0%]%.port" },
        { "fractional port", with(function(d) d.services[1].ports[1].port = 80.5 end), "ports%[0%]%.port" },
        { "port as string", with(function(d) d.services[1].ports[1].port = "80" end), "ports%[0%]%.port" },
        { "unknown protocol", with(function(d) d.services[1].ports[1].protocol = "sctp" end), "protocol" },
        { "ports missing", with(function(d) d.services[1].ports = nil end), "ports: expected an array" },
        { "owner as string", with(function(d) d.services[1].owner = "yes" end),
            'services%[0%]%.owner: expected true or false, got "yes"' },
        { "gateways as string", with(function(d) d.gateways = "10.87.1.1" end), "gateways: expected an array" },
        { "gateway not IPv4", with(function(d) d.gateways = { "10.87.1.1", "x" } end),
            'gateways%[1%]: expected an IPv4 dotted quad, got "x"' },
        { "deep nesting", '{"version":1,"node":"h","services":' .. string.rep("[", 100) .. string.rep("]", 100) .. "}",
            "invalid JSON" },
        { "NaN port", '{"version":1,"node":"h","services":[{"name":"a","node":"h","ip":"10.0.0.1",' ..
            '"ports":[{"port":NaN,"protocol":"tcp"}]}]}', "invalid JSON" },
    }
    for _, case in ipairs(bad) do
        it("rejects " .. case[1], function()
            local c, err = catalog.decode(case[2])
            assert.is_nil(c)
            assert.matches(case[3], err)
        end)
    end

    it("rejects one bad entry among good ones (the whole document)", function()
        local c, err = catalog.decode(with(function(d) d.services[2].ip = "x" end))
        assert.is_nil(c)
        assert.matches("services%[1%]%.ip", err)
    end)

    it("keeps control bytes out of error messages", function()
        local _, err = catalog.decode(with(function(d) d.services[1].name = "a\n[error] fake\27[31m" end))
        assert.is_nil(err:find("\n", 1, true))
        assert.is_nil(err:find("\27", 1, true))
    end)

    it("refuses oversized documents before decoding them", function()
        local _, err = catalog.decode(string.rep(" ", catalog.MAX_BYTES + 1))
        assert.matches("at most", err)
    end)
end)
