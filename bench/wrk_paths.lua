-- Requests a different path each time, from the file named by WRK_PATHS (one path per line),
-- so a browse run reads many pages rather than one; then reports like wrk_report.lua.
local paths = {}
for line in io.lines(os.getenv("WRK_PATHS")) do
  paths[#paths + 1] = line
end
local counter = 0

init = function(args)
  counter = math.random(#paths)
end

request = function()
  counter = counter % #paths + 1
  return wrk.format(nil, paths[counter])
end

dofile(os.getenv("WRK_REPORT"))
