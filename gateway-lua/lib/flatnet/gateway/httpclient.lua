-- A minimal HTTP/1.1 GET client over a cosocket (ngx.socket.tcp), enough to fetch a
-- catalog: Content-Length, chunked, or read-until-close bodies, all size-bounded.
-- The socket constructor is injectable, so busted drives it with a fake socket.
local M = {}

M.MAX_HEADERS = 100
M.DEFAULT_MAX_BODY = 4 * 1024 * 1024
M.DEFAULT_TIMEOUT_MS = 3000

--- Split "http://host[:port][/path]". Returns {host=, port=, path=} or nil, err.
function M.parse_url(url)
    if type(url) ~= "string" then
        return nil, "URL must be a string"
    end
    local host, port, path = url:match("^http://([%w.-]+):?(%d*)(.*)$")
    if not host or (path ~= "" and path:sub(1, 1) ~= "/") then
        return nil, "unsupported URL (expected http://host[:port]/path): " .. url
    end
    if path:find("[%c%s]") then
        return nil, "URL path has spaces or control characters: " .. url
    end
    port = port == "" and 80 or tonumber(port)
    if port < 1 or port > 65535 then
        return nil, "bad port in URL: " .. url
    end
    return { host = host, port = port, path = path == "" and "/" or path }
end

local function read_headers(sock)
    local status_line, err = sock:receive("*l")
    if not status_line then
        return nil, "reading status line: " .. tostring(err)
    end
    local status = status_line:match("^HTTP/1%.[01] (%d%d%d)")
    if not status then
        return nil, "not an HTTP/1.x response: " .. status_line:sub(1, 64)
    end
    local headers = {}
    for _ = 1, M.MAX_HEADERS do
        local line
        line, err = sock:receive("*l")
        if not line then
            return nil, "reading headers: " .. tostring(err)
        end
        if line == "" then
            return tonumber(status), headers
        end
        local name, value = line:match("^([^:%s]+):%s*(.-)%s*$")
        if not name then
            return nil, "malformed header line"
        end
        name = name:lower()
        headers[name] = headers[name] and (headers[name] .. ", " .. value) or value
    end
    return nil, "more than " .. M.MAX_HEADERS .. " header lines"
end

local function read_chunked(sock, max_body)
    local parts, total = {}, 0
    while true do
        local line, err = sock:receive("*l")
        if not line then
            return nil, "reading chunk size: " .. tostring(err)
        end
        local hex = line:match("^(%x+)%s*;?") or line:match("^(%x+)$")
        if not hex or #hex > 8 then
            return nil, "bad chunk size line"
        end
        local size = tonumber(hex, 16)
        if size == 0 then
            -- trailers, up to the empty line
            for _ = 1, M.MAX_HEADERS do
                line, err = sock:receive("*l")
                if not line then
                    return nil, "reading trailers: " .. tostring(err)
                end
                if line == "" then
                    return table.concat(parts)
                end
            end
            return nil, "too many trailer lines"
        end
        total = total + size
        if total > max_body then
            return nil, "body larger than " .. max_body .. " bytes"
        end
        local data
        data, err = sock:receive(size)
        if not data then
            return nil, "reading chunk: " .. tostring(err)
        end
        parts[#parts + 1] = data
        local crlf
        crlf, err = sock:receive("*l")
        if crlf ~= "" then
            return nil, "chunk not followed by CRLF" .. (err and (": " .. err) or "")
        end
    end
end

local function read_until_close(sock, max_body)
    local parts, total = {}, 0
    while true do
        local data, err, partial = sock:receive(8192)
        data = data or partial
        if data and #data > 0 then
            total = total + #data
            if total > max_body then
                return nil, "body larger than " .. max_body .. " bytes"
            end
            parts[#parts + 1] = data
        end
        if err == "closed" then
            return table.concat(parts)
        elseif err then
            return nil, "reading body: " .. err
        end
    end
end

local function read_body(sock, headers, max_body)
    local te = headers["transfer-encoding"]
    if te then
        if te:lower():match("chunked%s*$") then
            return read_chunked(sock, max_body)
        end
        return nil, "unsupported transfer-encoding: " .. te:sub(1, 32)
    end
    local cl = headers["content-length"]
    if cl then
        if not cl:match("^%d+$") or #cl > 12 then
            return nil, "bad content-length"
        end
        local n = tonumber(cl)
        if n > max_body then
            return nil, "body of " .. n .. " bytes, larger than " .. max_body
        end
        if n == 0 then
            return ""
        end
        local data, err = sock:receive(n)
        if not data then
            return nil, "reading body: " .. tostring(err)
        end
        return data
    end
    return read_until_close(sock, max_body)
end

--- GET url. opts: timeout (ms), max_body (bytes), tcp (socket constructor,
-- defaults to ngx.socket.tcp). Returns body or nil, err (the err names the status
-- for non-200 answers).
function M.get(url, opts)
    opts = opts or {}
    local u, err = M.parse_url(url)
    if not u then
        return nil, err
    end
    local tcp = opts.tcp or ngx.socket.tcp -- luacheck: globals ngx
    local sock = tcp()
    sock:settimeout(opts.timeout or M.DEFAULT_TIMEOUT_MS)
    local ok
    ok, err = sock:connect(u.host, u.port)
    if not ok then
        return nil, "connect to " .. u.host .. ":" .. u.port .. ": " .. tostring(err)
    end
    local host_header = u.port == 80 and u.host or (u.host .. ":" .. u.port)
    ok, err = sock:send("GET " .. u.path .. " HTTP/1.1\r\nHost: " .. host_header ..
        "\r\nUser-Agent: flatnet-gateway\r\nAccept: application/json\r\nConnection: close\r\n\r\n")
    if not ok then
        sock:close()
        return nil, "sending request: " .. tostring(err)
    end
    local status, headers = read_headers(sock)
    if not status then
        sock:close()
        return nil, headers
    end
    if status ~= 200 then
        sock:close()
        return nil, "HTTP status " .. status
    end
    local body
    body, err = read_body(sock, headers, opts.max_body or M.DEFAULT_MAX_BODY)
    sock:close()
    return body, err
end

return M
