local i = 3
local c = 0
while i <= #ARGV do c = c + #ARGV[i+2]; i = i + 6 end
return c
