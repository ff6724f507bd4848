local static = require("flatnet.gateway.static")

describe("static routes file", function()
    it("parses routes, ports and comments", function()
        local s = assert(static.parse([[
# comment
route wiki / 10.87.3.4:8080   # trailing comment
route git.example.org /api/v2 10.87.1.9:3001 10.87.2.9:3001 10.87.1.9:3001

port forgejo 3001
]], "flatnet.test"))
        assert.equal(2, #s.routes)
        assert.same({ host = "wiki.flatnet.test", prefix = "/", targets = { "10.87.3.4:8080" } }, s.routes[1])
        assert.same({ "10.87.1.9:3001", "10.87.2.9:3001" }, s.routes[2].targets)
        assert.equal("git.example.org", s.routes[2].host)
        assert.equal(3001, s.ports.forgejo)
    end)

    local bad = {
        { "route wiki / 10.87.3.4", "line 1: bad target" },
        { "route wiki / example.com:80", "bad target" },
        { "route wiki docs 10.87.3.4:80", "path prefix must start with /" },
        { "route wi_ki / 10.87.3.4:80", "bad host" },
        { "route wiki /\nroute", "line 1: expected: route" },
        { "port forgejo 0", "expected: port" },
        { "port forgejo http", "expected: port" },
        { "\n\nlisten 80", "line 3: unknown directive" },
        { "route a / 10.0.0.1:1\nroute a / 10.0.0.2:1", "line 2: duplicate route" },
    }
    for _, case in ipairs(bad) do
        it("rejects " .. case[1]:gsub("\n", "\\n"), function()
            local s, err = static.parse(case[1], "flatnet.test")
            assert.is_nil(s)
            assert.matches(case[2], err)
        end)
    end
end)
