-- keys.lua stores the receipt key set if it is still what the caller read:
-- KEYS[1] the key set, ARGV[1] the value read ("" for none), ARGV[2] the new
-- value. It returns the value stored afterwards: the new one, or what
-- another replica stored first.
local cur = redis.call('GET', KEYS[1])
if (cur or '') == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return ARGV[2]
end
return cur
