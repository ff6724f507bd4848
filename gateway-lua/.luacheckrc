-- luacheck config for the gateway Lua (run from the repo root: luacheck gateway-lua tests/gateway/unit)
std = "luajit"
globals = { "ngx" } -- OpenResty writes ngx.status, ngx.header, ngx.ctx
max_line_length = 130
files["tests/gateway/unit"] = { std = "+busted" }
files["../tests/gateway/unit"] = { std = "+busted" }
