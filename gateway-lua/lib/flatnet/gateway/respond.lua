-- Send a complete generated response and end the request (any phase that may send).
local M = {}

function M.send(status, body, content_type)
    ngx.status = status
    ngx.header["Content-Type"] = content_type or "text/html; charset=utf-8"
    ngx.header["Cache-Control"] = "no-store"
    ngx.print(body)
    return ngx.exit(ngx.HTTP_OK)
end

return M
