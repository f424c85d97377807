-- Applies a batch of fleet-ledger deltas and returns each ledger's sum.
-- KEYS: one hash per rule, field = bucket index, value = sum of rates.
-- ARGV[1] current bucket, ARGV[2] buckets that stay live, ARGV[3] TTL in ms,
-- then per key, in KEYS order: the number of deltas n, then n pairs of
-- bucket and delta. The caller has already netted every report of the batch
-- into one delta per rule and bucket, so the work here does not grow with the
-- number of reports.
local cur = tonumber(ARGV[1])
local oldest = cur - tonumber(ARGV[2]) + 1
local ttl = ARGV[3]
local a = 4
local sums = {}
for k = 1, #KEYS do
  local key = KEYS[k]
  local n = tonumber(ARGV[a])
  a = a + 1
  for j = 1, n do
    local b = ARGV[a]
    local left = tonumber(redis.call('HINCRBYFLOAT', key, b, ARGV[a + 1]))
    if left < 0 then
      redis.call('HSET', key, b, '0')
    end
    a = a + 2
  end
  local all = redis.call('HGETALL', key)
  local sum = 0
  for j = 1, #all, 2 do
    local b = tonumber(all[j])
    if b >= oldest and b <= cur then
      sum = sum + tonumber(all[j + 1])
    else
      redis.call('HDEL', key, all[j])
    end
  end
  redis.call('PEXPIRE', key, ttl)
  sums[k] = string.format('%.17g', sum)
end
return sums
