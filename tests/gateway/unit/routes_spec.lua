local routes = require("flatnet.gateway.routes")
local names = require("flatnet.gateway.names")

local function svc(name, ip, port, node)
    return { name = name, node = node or "host1", ip = ip, ports = { { port = port, protocol = "tcp" } },
        tcp_port = port }
end

describe("host names", function()
    it("normalises Host headers", function()
        assert.equal("forgejo.flatnet.test", names.normalize_host("Forgejo.Flatnet.Test:8080"))
        assert.equal("forgejo.flatnet.test", names.normalize_host("forgejo.flatnet.test."))
        assert.equal("[::1]", names.normalize_host("[::1]"))
    end)
    it("validates labels strictly", function()
        assert.is_true(names.is_label("forgejo"))
        assert.is_true(names.is_label("a-1"))
        assert.is_false(names.is_label("-a"))
        assert.is_false(names.is_label("a-"))
        assert.is_false(names.is_label("a.b"))
        assert.is_false(names.is_label(""))
        assert.is_false(names.is_label(string.rep("a", 64)))
        assert.is_true(names.is_label(string.rep("a", 63)))
        assert.is_false(names.is_label("Ünï"))
    end)
    it("qualifies bare labels with the domain", function()
        assert.equal("web.flatnet.test", names.qualify("web", "flatnet.test"))
        assert.equal("git.example.org", names.qualify("Git.Example.org", "flatnet.test"))
    end)
end)

describe("prefix matching", function()
    it("matches whole path segments", function()
        assert.is_true(routes.prefix_matches("/", "/anything"))
        assert.is_true(routes.prefix_matches("/docs", "/docs"))
        assert.is_true(routes.prefix_matches("/docs", "/docs/a"))
        assert.is_false(routes.prefix_matches("/docs", "/docsx"))
        assert.is_true(routes.prefix_matches("/docs/", "/docs/x"))
        assert.is_false(routes.prefix_matches("/docs/", "/docs"))
        assert.is_false(routes.prefix_matches("/docs", "/"))
    end)
end)

describe("route table", function()
    local domain = "flatnet.test"

    it("serves each service at <name>.<domain> on its first tcp port", function()
        local list = routes.build({ { services = { svc("forgejo", "10.87.1.5", 3000) } } }, nil, domain)
        assert.equal(1, #list)
        assert.same({ "10.87.1.5:3000" }, list[1].targets)
        local c = routes.compile(list)
        assert.equal(list[1], routes.match(c, "forgejo.flatnet.test", "/user/login"))
        assert.is_nil(routes.match(c, "other.flatnet.test", "/"))
        assert.is_nil(routes.match(c, "forgejo", "/"))
    end)

    it("merges same-named services from several catalogs into one route", function()
        local list = routes.build({
            { services = { svc("forgejo", "10.87.2.9", 3000, "host2"), svc("wiki", "10.87.2.3", 80, "host2") } },
            { services = { svc("forgejo", "10.87.1.5", 3000, "host1"), svc("forgejo", "10.87.2.9", 3000, "host2") } },
        }, nil, domain)
        assert.equal(2, #list)
        assert.equal("forgejo.flatnet.test", list[1].host)
        assert.same({ "10.87.1.5:3000", "10.87.2.9:3000" }, list[1].targets)
        assert.equal("host1", list[1].nodes["10.87.1.5:3000"])
    end)

    it("skips services without a tcp port, with a warning", function()
        local s = { name = "dns", node = "h", ip = "10.87.1.1", ports = { { port = 53, protocol = "udp" } } }
        local list, warnings = routes.build({ { services = { s } } }, nil, domain)
        assert.equal(0, #list)
        assert.matches("no tcp port", warnings[1])
    end)

    it("lets the static file pick the port and override or add routes", function()
        local static = {
            ports = { forgejo = 3001 },
            routes = {
                { host = "forgejo.flatnet.test", prefix = "/api", targets = { "10.87.9.9:9000" } },
                { host = "wiki.flatnet.test", prefix = "/", targets = { "10.87.3.3:80" } },
            },
        }
        local list, warnings = routes.build({ { services = { svc("forgejo", "10.87.1.5", 3000),
            svc("wiki", "10.87.1.6", 8080) } } }, static, domain)
        assert.equal(3, #list)
        local c = routes.compile(list)
        assert.same({ "10.87.1.5:3001" }, routes.match(c, "forgejo.flatnet.test", "/").targets)
        assert.same({ "10.87.9.9:9000" }, routes.match(c, "forgejo.flatnet.test", "/api/v1/repos").targets)
        local wiki = routes.match(c, "wiki.flatnet.test", "/")
        assert.equal("static", wiki.origin)
        assert.same({ "10.87.3.3:80" }, wiki.targets)
        assert.matches("overrides", warnings[1])
    end)

    it("picks the longest matching prefix", function()
        local c = routes.compile({
            { host = "h.d", prefix = "/", targets = { "10.87.0.1:1" } },
            { host = "h.d", prefix = "/a/b", targets = { "10.87.0.3:1" } },
            { host = "h.d", prefix = "/a", targets = { "10.87.0.2:1" } },
        })
        assert.equal("/a/b", routes.match(c, "h.d", "/a/b/c").prefix)
        assert.equal("/a", routes.match(c, "h.d", "/a/bc").prefix)
        assert.equal("/a", routes.match(c, "h.d", "/a").prefix)
        assert.equal("/", routes.match(c, "h.d", "/ab").prefix)
    end)

    it("is deterministic whatever the catalog order", function()
        local a = routes.build({ { services = { svc("x", "10.87.1.2", 1) } }, { services = { svc("x", "10.87.1.1", 1) } } },
            nil, domain)
        local b = routes.build({ { services = { svc("x", "10.87.1.1", 1) } }, { services = { svc("x", "10.87.1.2", 1) } } },
            nil, domain)
        assert.same(a, b)
    end)
end)
