local pages = require("flatnet.gateway.pages")

describe("pages", function()
    it("lists known services on the 404 page, escaped", function()
        local page = pages.no_route("x.<b>.test", "/p", {
            { host = "forgejo.flatnet.test", prefix = "/" },
        }, "https")
        assert.matches("No service at", page)
        assert.matches('href="https://forgejo.flatnet.test/"', page, 1, true)
        assert.is_nil(page:find("<b>", 1, true))
        assert.matches("x.&lt;b&gt;.test", page, 1, true)
    end)

    it("explains which targets are down", function()
        local page = pages.all_down("web.flatnet.test", { prefix = "/" }, {
            { target = "10.87.1.5:80", up = false, reason = "active check down: connection refused" },
        })
        assert.matches("All 1 target%(s%)", page)
        assert.matches("connection refused", page)
    end)
end)
