local routes = require("flatnet.gateway.routes")
local names = require("flatnet.gateway.names")
local ipv4 = require("flatnet.gateway.ipv4")

local function svc(name, ip, port, node)
    return { name = name, node = node or "host1", ip = ip, ports = { { port = port, protocol = "tcp" } },
        tcp_port = port }
end

local function hosts(list)
    local out = {}
    for _, r in ipairs(list) do
        out[#out + 1] = r.host .. r.prefix
    end
    return out
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
        assert.same({ "forgejo.flatnet.test/", "forgejo.host1.flatnet.test/" }, hosts(list))
        assert.same({ "10.87.1.5:3000" }, list[1].targets)
        local c = routes.compile(list)
        assert.equal(list[1], routes.match(c, "forgejo.flatnet.test", "/user/login"))
        assert.same({ "10.87.1.5:3000" }, routes.match(c, "forgejo.host1.flatnet.test", "/").targets)
        assert.is_nil(routes.match(c, "other.flatnet.test", "/"))
        assert.is_nil(routes.match(c, "forgejo", "/"))
    end)

    it("gives a bare name to one node: first seen, then by node name; others at <name>.<node>", function()
        local cats = {
            { services = { svc("forgejo", "10.87.2.9", 3000, "host2"), svc("wiki", "10.87.2.3", 80, "host2") } },
            { services = { svc("forgejo", "10.87.1.5", 3000, "host1"), svc("forgejo", "10.87.2.9", 3000, "host2"),
                svc("forgejo", "10.87.1.6", 3000, "host1") } },
        }
        local seen = {}
        local list, warnings = routes.build(cats, nil, domain, { seen = seen, now = 100 })
        assert.same({ "forgejo.flatnet.test/", "forgejo.host1.flatnet.test/", "forgejo.host2.flatnet.test/",
            "wiki.flatnet.test/", "wiki.host2.flatnet.test/" }, hosts(list))
        -- Seen at the same moment: the tie goes by node name. One node, both its containers.
        assert.same({ "10.87.1.5:3000", "10.87.1.6:3000" }, list[1].targets)
        assert.equal("host1", list[1].nodes["10.87.1.5:3000"])
        assert.same({ "10.87.2.9:3000" }, list[3].targets)
        assert.matches("forgejo on node host2 does not own the name forgejo: only at forgejo.host2", warnings[1])

        -- Seen first wins over node name: "web" on host9 came first; host1's arrives later.
        seen = {}
        routes.build({ { services = { svc("web", "10.87.9.2", 80, "host9") } } }, nil, domain, { seen = seen, now = 1 })
        local both = { { services = { svc("web", "10.87.9.2", 80, "host9"), svc("web", "10.87.1.2", 80, "host1") } } }
        list = routes.build(both, nil, domain, { seen = seen, now = 2 })
        local c = routes.compile(list)
        assert.same({ "10.87.9.2:80" }, routes.match(c, "web.flatnet.test", "/").targets)
        assert.same({ "10.87.1.2:80" }, routes.match(c, "web.host1.flatnet.test", "/").targets)
        -- The owner briefly gone (a restart) keeps its place; gone for long, it is forgotten.
        routes.build({ { services = { svc("web", "10.87.1.2", 80, "host1") } } }, nil, domain, { seen = seen, now = 60 })
        c = routes.compile(routes.build(both, nil, domain, { seen = seen, now = 61 }))
        assert.same({ "10.87.9.2:80" }, routes.match(c, "web.flatnet.test", "/").targets)
        routes.build({ { services = { svc("web", "10.87.1.2", 80, "host1") } } }, nil, domain, { seen = seen, now = 900 })
        c = routes.compile(routes.build(both, nil, domain, { seen = seen, now = 901 }))
        assert.same({ "10.87.1.2:80" }, routes.match(c, "web.flatnet.test", "/").targets)

        -- Balancing across nodes only when asked.
        c = routes.compile(routes.build(both, nil, domain, { seen = seen, now = 902, replicas = { web = true } }))
        assert.same({ "10.87.1.2:80", "10.87.9.2:80" }, routes.match(c, "web.flatnet.test", "/").targets)
    end)

    it("follows the catalog's owner flags (Flatnet DNS's rule) when it gives them", function()
        local mine, theirs = svc("web", "10.87.2.2", 80, "host2"), svc("web", "10.87.1.2", 80, "host1")
        mine.owner, theirs.owner = true, false
        local c = routes.compile(routes.build({ { services = { theirs, mine } } }, nil, domain, { now = 1 }))
        assert.same({ "10.87.2.2:80" }, routes.match(c, "web.flatnet.test", "/").targets)
        -- The owner has no routable port: nobody gets the bare name.
        local other = svc("db", "10.87.1.3", 5432, "host1")
        other.owner = false
        c = routes.compile(routes.build({ { services = { other } } }, nil, domain, { now = 1 }))
        assert.is_nil(routes.match(c, "db.flatnet.test", "/"))
        assert.same({ "10.87.1.3:5432" }, routes.match(c, "db.host1.flatnet.test", "/").targets)
    end)

    it("never routes outside the Flatnet, from a catalog or the static file", function()
        local cidr = ipv4.parse_cidr("10.87.0.0/16")
        cidr.text = "10.87.0.0/16"
        local static = { ports = {}, routes = {
            { host = "admin.flatnet.test", prefix = "/", targets = { "127.0.0.1:9999" } },
            { host = "mixed.flatnet.test", prefix = "/", targets = { "192.168.1.5:80", "10.87.3.3:80" } },
        } }
        local list, warnings = routes.build({ { services = { svc("admin", "127.0.0.1", 9999),
            svc("web", "10.87.1.2", 80) } } }, static, domain, { cidr = cidr })
        assert.same({ "mixed.flatnet.test/", "web.flatnet.test/", "web.host1.flatnet.test/" }, hosts(list))
        assert.same({ "10.87.3.3:80" }, list[1].targets)
        assert.matches("service admin on node host1: 127.0.0.1 is outside the Flatnet 10.87.0.0/16", warnings[1])
        assert.matches("127.0.0.1:9999 is outside the Flatnet", table.concat(warnings, "\n"))
        assert.matches("192.168.1.5:80 is outside the Flatnet", table.concat(warnings, "\n"))
    end)

    it("never routes to a Flatnet host's own address unless host_targets names it", function()
        local static = { ports = {}, routes = {
            { host = "dns.flatnet.test", prefix = "/", targets = { "10.87.1.1:53" } },
            { host = "metrics.flatnet.test", prefix = "/", targets = { "10.87.2.1:9587", "10.87.2.7:80" } },
            { host = "grafana.flatnet.test", prefix = "/", targets = { "10.87.1.1:3000" } },
        } }
        local cat = { services = { svc("sneaky", "10.87.2.1", 7070, "host2"), svc("web", "10.87.1.2", 80) },
            gateways = { "10.87.1.1", "10.87.2.1" } }
        local list, warnings = routes.build({ cat }, static, domain, { host_targets = { ["10.87.1.1:3000"] = true } })
        assert.same({ "grafana.flatnet.test/", "metrics.flatnet.test/", "web.flatnet.test/",
            "web.host1.flatnet.test/" }, hosts(list))
        assert.same({ "10.87.1.1:3000" }, list[1].targets)
        assert.same({ "10.87.2.7:80" }, list[2].targets)
        local all = table.concat(warnings, "\n")
        assert.matches("service sneaky on node host2: 10.87.2.1 is a Flatnet host's own address", all, 1, true)
        assert.matches("static route dns.flatnet.test/: 10.87.1.1:53 is a Flatnet host's own address", all, 1, true)
        assert.matches("10.87.2.1:9587 is a Flatnet host's own address", all, 1, true)
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
        assert.same({ "forgejo.flatnet.test/", "forgejo.flatnet.test/api", "forgejo.host1.flatnet.test/",
            "wiki.flatnet.test/", "wiki.host1.flatnet.test/" }, hosts(list))
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
