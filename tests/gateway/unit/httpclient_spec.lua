local httpclient = require("flatnet.gateway.httpclient")

-- A fake cosocket over a canned response, with ngx.socket.tcp's receive semantics.
local function fake_tcp(response, opts)
    opts = opts or {}
    local sock = { sent = {}, pos = 1 }
    function sock.settimeout() end
    function sock.connect(_, host, port)
        sock.host, sock.port = host, port
        if opts.refuse then
            return nil, "connection refused"
        end
        return true
    end
    function sock.send(_, data)
        sock.sent[#sock.sent + 1] = data
        return #data
    end
    function sock.receive(_, pattern)
        local rest = response:sub(sock.pos)
        if pattern == "*l" then
            local nl = rest:find("\n", 1, true)
            if not nl then
                sock.pos = #response + 1
                return nil, "closed", rest
            end
            sock.pos = sock.pos + nl
            return (rest:sub(1, nl - 1):gsub("\r", ""))
        end
        if #rest < pattern then
            sock.pos = #response + 1
            return nil, "closed", rest
        end
        sock.pos = sock.pos + pattern
        return rest:sub(1, pattern)
    end
    function sock.close() sock.closed = true end
    return function()
        return sock
    end, sock
end

describe("http client", function()
    it("parses URLs", function()
        assert.same({ host = "10.87.0.1", port = 7070, path = "/v1/catalog" },
            httpclient.parse_url("http://10.87.0.1:7070/v1/catalog"))
        assert.same({ host = "flatnetd", port = 80, path = "/" }, httpclient.parse_url("http://flatnetd"))
        assert.is_nil(httpclient.parse_url("https://x/"))
        assert.is_nil(httpclient.parse_url("http://x:99999/"))
        assert.is_nil(httpclient.parse_url("http://x/a b"))
    end)

    it("sends a well-formed GET and reads a Content-Length body", function()
        local tcp, sock = fake_tcp("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: x\r\n\r\nhelloEXTRA")
        assert.equal("hello", httpclient.get("http://10.87.0.1:7070/v1/catalog", { tcp = tcp }))
        assert.equal("10.87.0.1", sock.host)
        assert.equal(7070, sock.port)
        assert.matches("^GET /v1/catalog HTTP/1%.1\r\nHost: 10%.87%.0%.1:7070\r\n", sock.sent[1])
        assert.matches("Connection: close\r\n\r\n$", sock.sent[1])
        assert.is_true(sock.closed)
    end)

    it("decodes chunked bodies with extensions and trailers", function()
        local tcp = fake_tcp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" ..
            "4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: 1\r\n\r\n")
        assert.equal("Wikipedia in\r\n\r\nchunks.", httpclient.get("http://h/", { tcp = tcp }))
    end)

    it("reads close-delimited bodies", function()
        local tcp = fake_tcp("HTTP/1.0 200 OK\r\n\r\nall of it")
        assert.equal("all of it", httpclient.get("http://h/", { tcp = tcp }))
    end)

    it("reports non-200 statuses", function()
        local body, err = httpclient.get("http://h/", { tcp = fake_tcp("HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n") })
        assert.is_nil(body)
        assert.equal("HTTP status 503", err)
    end)

    it("reports connection errors", function()
        local _, err = httpclient.get("http://h:1/", { tcp = fake_tcp("", { refuse = true }) })
        assert.matches("connect to h:1: connection refused", err)
    end)

    it("rejects truncated, oversized and malformed bodies", function()
        local cases = {
            { "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "reading body: closed" },
            { "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", "larger than 10" },
            { "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad content%-length" },
            { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size" },
            { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n20\r\n", "larger than 10" },
            { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n", "not followed by CRLF" },
            { "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab", "reading chunk" },
            { "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "unsupported transfer%-encoding" },
            { "SSH-2.0-OpenSSH\r\n", "not an HTTP/1%.x response" },
            { "HTTP/1.1 200 OK\r\nbroken header\r\n\r\n", "malformed header" },
            { "HTTP/1.0 200 OK\r\n\r\n" .. string.rep("x", 11), "larger than 10" },
        }
        for _, c in ipairs(cases) do
            local body, err = httpclient.get("http://h/", { tcp = fake_tcp(c[1]), max_body = 10 })
            assert.is_nil(body, c[1])
            assert.matches(c[2], err)
        end
    end)
end)
