-- Applies a batch of fleet-ledger updates and returns each ledger's sum.
-- KEYS: one hash per rule, field = bucket index, value = sum of rates.
-- ARGV[1] current bucket, ARGV[2] buckets that stay live, ARGV[3] TTL in ms,
-- then five values per update: key index (1-based), bucket to add to, rate to
-- add, bucket to retract from (-1 for none), rate to retract.
local cur = tonumber(ARGV[1])
local retain = tonumber(ARGV[2])
local ttl = ARGV[3]
local oldest = cur - retain + 1
local i = 4
while i <= #ARGV do
  local key = KEYS[tonumber(ARGV[i])]
  redis.call('HINCRBYFLOAT', key, ARGV[i + 1], ARGV[i + 2])
  local rb = tonumber(ARGV[i + 3])
  if rb >= oldest and rb <= cur then
    local v = redis.call('HGET', key, ARGV[i + 3])
    if v then
      local left = tonumber(v) - tonumber(ARGV[i + 4])
      if left < 0 then left = 0 end
      redis.call('HSET', key, ARGV[i + 3], string.format('%.17g', left))
    end
  end
  i = i + 5
end
local sums = {}
for k = 1, #KEYS do
  local all = redis.call('HGETALL', KEYS[k])
  local sum = 0
  for j = 1, #all, 2 do
    local b = tonumber(all[j])
    if b >= oldest and b <= cur then
      sum = sum + tonumber(all[j + 1])
    else
      redis.call('HDEL', KEYS[k], all[j])
    end
  end
  redis.call('PEXPIRE', KEYS[k], ttl)
  sums[k] = string.format('%.17g', sum)
end
return sums
